-- wafer-scf schema 0002 (embedded SQLite): cached tokens/tickets with their refresh lease, and WeCom agents.

CREATE TABLE IF NOT EXISTS wafer_credentials (
  cred_key       TEXT    NOT NULL PRIMARY KEY,
  value          TEXT    NULL,
  expires_at     INTEGER NOT NULL DEFAULT 0,
  fetched_at     INTEGER NOT NULL DEFAULT 0,
  lease_owner    TEXT    NULL,
  lease_until_ms INTEGER NOT NULL DEFAULT 0,
  blocked_until  INTEGER NOT NULL DEFAULT 0,
  blocked_code   INTEGER NOT NULL DEFAULT 0,
  window_start   INTEGER NOT NULL DEFAULT 0,
  window_count   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS wafer_agents (
  corpid     TEXT    NOT NULL,
  agentid    TEXT    NOT NULL,
  secret     TEXT    NOT NULL,
  remark     TEXT    NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (corpid, agentid)
);
