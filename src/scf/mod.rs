//! Tencent SCF: the custom-runtime loop ([`runtime`]) over a hand-written runtime API client ([`wire`]), event
//! shapes ([`event`]; the usual gateway event read by hand, straight into its fields, in `usual` and `gateway`), and a
//! local emulator of the runtime API that supervises a real `bootstrap` child ([`emulator`]) for tests, replay and
//! benchmarks.

pub mod emulator;
pub mod event;
mod gateway;
pub mod replay;
pub mod runtime;
mod usual;
pub mod wire;
