-- wafer-scf schema 0005 (MySQL / MariaDB): a failed upstream fetch is remembered on the credential's row, so that
-- every instance answers with it (and none calls upstream) until `failed_until_ms`. `failed_count` counts
-- consecutive failures for the backoff; a successful fetch resets both. `force_day`/`force_count` and
-- `force_hour`/`force_hour_count` count forced refreshes per (Beijing) day and per hour, for the per-app budget.

ALTER TABLE wafer_credentials
  ADD COLUMN failed_until_ms BIGINT       NOT NULL DEFAULT 0,
  ADD COLUMN failed_code     BIGINT       NOT NULL DEFAULT 0,
  ADD COLUMN failed_message  VARCHAR(255) NOT NULL DEFAULT '',
  ADD COLUMN failed_count    BIGINT       NOT NULL DEFAULT 0,
  ADD COLUMN force_day       BIGINT       NOT NULL DEFAULT 0,
  ADD COLUMN force_count     BIGINT       NOT NULL DEFAULT 0,
  ADD COLUMN force_hour      BIGINT       NOT NULL DEFAULT 0,
  ADD COLUMN force_hour_count BIGINT      NOT NULL DEFAULT 0;
