-- wafer-scf schema 0004 (MySQL / MariaDB): caller keys. Only the SHA-256 of a key is stored; the key itself is
-- printed once by `wafer-scf key add`. Scopes are comma-separated lists (apps: WeChat appids and Tencent Cloud
-- APPIDs for COS; corps: WeCom corpids) or everything (scope_all = 1).

CREATE TABLE IF NOT EXISTS wafer_caller_keys (
  name         VARCHAR(64)  NOT NULL,
  key_hash     CHAR(64)     NOT NULL,
  scope_all    BIGINT       NOT NULL DEFAULT 0,
  scope_apps   TEXT         NOT NULL,
  scope_corps  TEXT         NOT NULL,
  created_at   BIGINT       NOT NULL,
  last_used_at BIGINT       NOT NULL DEFAULT 0,
  revoked_at   BIGINT       NOT NULL DEFAULT 0,
  PRIMARY KEY (name),
  UNIQUE KEY uk_caller_keys_hash (key_hash)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
