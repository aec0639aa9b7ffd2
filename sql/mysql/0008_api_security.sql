-- wafer-scf schema 0008 (MySQL / MariaDB): an app's keys for WeChat's API security (API 安全鉴权). The symmetric
-- key and the RSA private key are one sealed value (`secrets`, sealed with WAFER_MASTER_KEY like the AppSecret);
-- their SNs and the platform certificates (public) are stored as they are.

CREATE TABLE IF NOT EXISTS wafer_api_security (
  appid      VARCHAR(64)  NOT NULL,
  sym_sn     VARCHAR(64)  NOT NULL,
  key_sn     VARCHAR(64)  NOT NULL,
  secrets    TEXT         NOT NULL,
  certs      TEXT         NOT NULL,
  created_at BIGINT       NOT NULL,
  updated_at BIGINT       NOT NULL,
  PRIMARY KEY (appid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
