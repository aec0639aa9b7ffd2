//! wafer-scf: a Wafer-compatible session and credential server for WeChat mini-programs, official accounts and
//! WeChat Work, served over HTTP or as a Tencent SCF custom runtime.
//!
//! Layout:
//! - [`envelope`]: request/response envelope, return codes, typed `para` access;
//! - [`handlers`]: the interface set and its handlers (sessions, …);
//! - [`service`]: the transport-independent entry point every transport calls;
//! - [`request`]: what a transport knows about a request besides its body;
//! - [`auth`]: caller keys, enforcement modes, scope checks;
//! - [`tokens`]: the token/ticket cache with single-flight and a cross-process lease;
//! - [`scf`]: the SCF runtime loop, event shapes and a local runtime API emulator;
//! - [`store`]: one storage trait per kind of data, MySQL and embedded SQLite backends, sealing and caching layers;
//! - [`wechat`]: upstream clients and error classification;
//! - [`crypto`]: identifiers, hashing, data decryption, signatures;
//! - [`serve`]: HTTP mode; [`startup`]: building a service from configuration or piece by piece;
//! - [`cli`], [`config`], [`telemetry`]: the binary's arguments and wiring; [`settings`]: what configuration
//!   becomes (handler settings, transport options);
//! - [`ids`]: identifiers (appid, corpid, agentid, Tencent Cloud APPID), parsed once at the edge;
//! - [`admin`]: the admin operations as data (one serde type each), run locally or through a server's admin
//!   interfaces, and the status report;
//! - [`remote`]: the CLI's `--server`, the admin operations through a deployed server;
//! - [`apisec`]: apps' keys for WeChat's API security, checked, stored and cached for the outgoing calls;
//! - [`registry`]: apps, agents, COS keys and caller keys — one upsert per kind, saying what changed;
//! - [`import`]: migration from the seed's / original Wafer's MySQL tables;
//! - [`metrics`]: Prometheus counters and histograms (HTTP `/metrics`, SCF log lines);
//! - [`clock`]: injectable time.

pub mod admin;
pub mod alloc;
pub mod apisec;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod envelope;
pub mod handlers;
pub mod ids;
pub mod import;
pub mod metrics;
pub mod payload;
pub mod registry;
pub mod remote;
pub mod request;
pub mod scf;
pub mod serve;
pub mod service;
pub mod settings;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod wechat;
