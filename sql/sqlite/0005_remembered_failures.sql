-- wafer-scf schema 0005 (embedded SQLite): a failed upstream fetch is remembered on the credential's row, so that
-- every process answers with it (and none calls upstream) until `failed_until_ms`. `failed_count` counts
-- consecutive failures for the backoff; a successful fetch resets both. `force_day`/`force_count` count forced
-- refreshes per (Beijing) day, for the per-app budget.

ALTER TABLE wafer_credentials ADD COLUMN failed_until_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE wafer_credentials ADD COLUMN failed_code INTEGER NOT NULL DEFAULT 0;
ALTER TABLE wafer_credentials ADD COLUMN failed_message TEXT NOT NULL DEFAULT '';
ALTER TABLE wafer_credentials ADD COLUMN failed_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE wafer_credentials ADD COLUMN force_day INTEGER NOT NULL DEFAULT 0;
ALTER TABLE wafer_credentials ADD COLUMN force_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE wafer_credentials ADD COLUMN force_hour INTEGER NOT NULL DEFAULT 0;
ALTER TABLE wafer_credentials ADD COLUMN force_hour_count INTEGER NOT NULL DEFAULT 0;
