-- wafer-scf schema 0002 (MySQL / MariaDB): cached access tokens and tickets with their refresh lease, and the WeCom
-- agent registry.
--
-- One row per credential key (`mp:token:<appid>`, `wc:ticket:<corpid>:<agentid>`, ...). `lease_owner`/`lease_until_ms`
-- make exactly one process refresh a key at a time; a holder that dies simply lets its lease run out.
-- `blocked_until` stops upstream calls after a daily-quota refusal; `window_start`/`window_count` count fetches per
-- hour for the ticket budgets.

CREATE TABLE IF NOT EXISTS wafer_credentials (
  cred_key       VARCHAR(191)  NOT NULL,
  value          TEXT          NULL,
  expires_at     BIGINT        NOT NULL DEFAULT 0,
  fetched_at     BIGINT        NOT NULL DEFAULT 0,
  lease_owner    VARCHAR(64)   NULL,
  lease_until_ms BIGINT        NOT NULL DEFAULT 0,
  blocked_until  BIGINT        NOT NULL DEFAULT 0,
  blocked_code   BIGINT        NOT NULL DEFAULT 0,
  window_start   BIGINT        NOT NULL DEFAULT 0,
  window_count   BIGINT        NOT NULL DEFAULT 0,
  PRIMARY KEY (cred_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS wafer_agents (
  corpid     VARCHAR(64)   NOT NULL,
  agentid    VARCHAR(64)   NOT NULL,
  secret     VARCHAR(1024) NOT NULL,
  remark     VARCHAR(255)  NOT NULL DEFAULT '',
  created_at BIGINT        NOT NULL,
  updated_at BIGINT        NOT NULL,
  PRIMARY KEY (corpid, agentid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
