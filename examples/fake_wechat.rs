//! A stand-in for WeChat and WeCom on this machine, for the offline demo (`scripts/demo.sh`) and replays: the same
//! fake the tests use, never part of the server. Prints its base URL, then serves until killed.
//!
//! `cargo run --example fake_wechat -- APPID=SECRET [CORPID=SECRET …]` registers those apps / corps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/it/fake_secure.rs"]
mod fake_secure;
#[allow(dead_code)]
#[path = "../tests/it/fake_wechat.rs"]
mod fake_wechat;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let fake = fake_wechat::FakeWeChat::start().await;
    for arg in std::env::args().skip(1) {
        let (id, secret) = arg.split_once('=').expect("arguments are ID=SECRET");
        fake.register(id, secret);
    }
    println!("{}", fake.base_url);
    std::future::pending::<()>().await;
}
