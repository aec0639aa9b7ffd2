-- wafer-scf schema 0001 (embedded SQLite): apps and mini-program sessions. Applied automatically on open.

CREATE TABLE IF NOT EXISTS wafer_apps (
  appid                 TEXT    NOT NULL PRIMARY KEY,
  secret                TEXT    NOT NULL,
  login_duration_secs   INTEGER NOT NULL DEFAULT 2592000,
  session_duration_secs INTEGER NOT NULL DEFAULT 2592000,
  token_mode            TEXT    NOT NULL DEFAULT 'stable',
  created_at            INTEGER NOT NULL,
  updated_at            INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS wafer_sessions (
  id            TEXT    NOT NULL PRIMARY KEY,
  skey_hash     TEXT    NOT NULL,
  appid         TEXT    NOT NULL,
  openid        TEXT    NOT NULL,
  unionid       TEXT    NOT NULL DEFAULT '',
  session_key   TEXT    NOT NULL,
  user_info     TEXT    NULL,
  created_at    INTEGER NOT NULL,
  last_visit_at INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_sessions_user ON wafer_sessions (appid, openid, created_at);
CREATE INDEX IF NOT EXISTS idx_sessions_visit ON wafer_sessions (last_visit_at);
