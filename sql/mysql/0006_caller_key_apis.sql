-- wafer-scf schema 0006 (MySQL / MariaDB): a caller key may be limited to WeChat / WeCom API path prefixes for the
-- token-free calls (`qcloud.mimi.call`, `qcloud.work.call`, `/wechat/…`, `/wecom/…`). A comma-separated list;
-- empty: every path.

ALTER TABLE wafer_caller_keys
  ADD COLUMN scope_apis VARCHAR(2048) NOT NULL DEFAULT '';
