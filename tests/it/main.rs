//! The one integration-test binary: every suite runs against the embedded store and, when
//! `WAFER_TEST_MYSQL_URL` is set (always in CI), against a fresh MySQL database per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_secure;
mod fake_wechat;
mod faulty;
mod fuzz;
mod helpers;

mod admin;
mod apisec;
mod bad_input;
mod boundary;
mod cli;
mod cos;
mod credentials;
mod docs;
mod first_day;
mod http;
mod http_wire;
mod import;
mod killed;
mod multiprocess;
mod passthrough;
mod platform;
mod proxy;
mod readme;
mod resilience;
mod scf;
mod sdks;
mod security;
mod sessions;
mod store_conformance;
mod streaming;
mod upstream_rules;
