-- wafer-scf schema 0003 (MySQL / MariaDB): Tencent Cloud COS credentials held by the server, per Tencent Cloud APPID,
-- so callers never send their SecretKey.

CREATE TABLE IF NOT EXISTS wafer_cos_keys (
  appid      VARCHAR(20)   NOT NULL,
  secret_id  VARCHAR(128)  NOT NULL,
  secret_key VARCHAR(1024) NOT NULL,
  created_at BIGINT        NOT NULL,
  updated_at BIGINT        NOT NULL,
  PRIMARY KEY (appid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
