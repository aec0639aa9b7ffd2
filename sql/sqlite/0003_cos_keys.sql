-- wafer-scf schema 0003 (embedded SQLite): COS credentials held by the server, per Tencent Cloud APPID.

CREATE TABLE IF NOT EXISTS wafer_cos_keys (
  appid      TEXT    NOT NULL PRIMARY KEY,
  secret_id  TEXT    NOT NULL,
  secret_key TEXT    NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
