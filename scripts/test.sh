#!/usr/bin/env bash
# The project's test command. Runs every test against the embedded store; when WAFER_TEST_MYSQL_URL is set
# (e.g. mysql://root@127.0.0.1:3306/test) the MySQL suite runs too, each test in a fresh database.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${WAFER_TEST_MYSQL_URL:-}" ]; then
  echo "MySQL suite: on (${WAFER_TEST_MYSQL_URL%%@*}@…)"
else
  echo "MySQL suite: off (set WAFER_TEST_MYSQL_URL to run it)"
fi
cargo test --locked "$@"
