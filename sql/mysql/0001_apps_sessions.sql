-- wafer-scf schema 0001 (MySQL / MariaDB): apps and mini-program sessions.
-- Applied by `wafer-scf migrate`. Statements are separated by semicolons at line ends.
-- All times are Unix seconds (BIGINT), so no time-zone conversion happens in the database.

CREATE TABLE IF NOT EXISTS wafer_apps (
  appid                 VARCHAR(64)   NOT NULL,
  secret                VARCHAR(1024) NOT NULL,
  login_duration_secs   BIGINT        NOT NULL DEFAULT 2592000,
  session_duration_secs BIGINT        NOT NULL DEFAULT 2592000,
  token_mode            VARCHAR(16)   NOT NULL DEFAULT 'stable',
  created_at            BIGINT        NOT NULL,
  updated_at            BIGINT        NOT NULL,
  PRIMARY KEY (appid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS wafer_sessions (
  id            VARCHAR(100)  NOT NULL,
  skey_hash     CHAR(64)      NOT NULL,
  appid         VARCHAR(64)   NOT NULL,
  openid        VARCHAR(128)  NOT NULL,
  unionid       VARCHAR(128)  NOT NULL DEFAULT '',
  session_key   VARCHAR(512)  NOT NULL,
  user_info     MEDIUMTEXT    NULL,
  created_at    BIGINT        NOT NULL,
  last_visit_at BIGINT        NOT NULL,
  PRIMARY KEY (id),
  KEY idx_sessions_user (appid, openid, created_at),
  KEY idx_sessions_visit (last_visit_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
