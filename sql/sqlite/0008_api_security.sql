-- wafer-scf schema 0008 (embedded SQLite): an app's keys for WeChat's API security. `secrets` (the symmetric key and
-- the RSA private key) is sealed like the AppSecret; the SNs and the platform certificates are public.

CREATE TABLE IF NOT EXISTS wafer_api_security (
  appid      TEXT    NOT NULL PRIMARY KEY,
  sym_sn     TEXT    NOT NULL,
  key_sn     TEXT    NOT NULL,
  secrets    TEXT    NOT NULL,
  certs      TEXT    NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
