-- wafer-scf schema 0004 (embedded SQLite): caller keys (only their SHA-256 is stored).

CREATE TABLE IF NOT EXISTS wafer_caller_keys (
  name         TEXT    NOT NULL PRIMARY KEY,
  key_hash     TEXT    NOT NULL UNIQUE,
  scope_all    INTEGER NOT NULL DEFAULT 0,
  scope_apps   TEXT    NOT NULL,
  scope_corps  TEXT    NOT NULL,
  created_at   INTEGER NOT NULL,
  last_used_at INTEGER NOT NULL DEFAULT 0,
  revoked_at   INTEGER NOT NULL DEFAULT 0
);
