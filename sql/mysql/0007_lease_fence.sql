-- wafer-scf schema 0007 (MySQL / MariaDB): the refresh lease's generation. Every time a process takes the lease the
-- generation goes up by one; renewing the lease and storing a fetched value both name the generation they hold, so a
-- holder that was frozen or cut off while another instance took over can no longer write (a fenced write).

ALTER TABLE wafer_credentials
  ADD COLUMN lease_gen BIGINT NOT NULL DEFAULT 0;
