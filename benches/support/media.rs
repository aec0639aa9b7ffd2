//! Benchmarks' large replies: `GET /cgi-bin/media/get?media_id=<bytes>` on the fake WeChat answers that many bytes
//! of a fixed pattern as `application/octet-stream` (a token WeChat would refuse gets its 40001 JSON instead), the
//! body sliced from one buffer made once, so the fake itself costs no more than its socket writes.

use crate::fake_wechat::{valid_token, FakeState};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// The largest reply the route gives.
pub const MAX_MEDIA: usize = 16 * 1024 * 1024;

/// The pattern a reply of `len` bytes carries (what a client checks it received).
pub fn media(len: usize) -> Bytes {
    static ALL: OnceLock<Bytes> = OnceLock::new();
    let all = ALL.get_or_init(|| (0..MAX_MEDIA).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into());
    all.slice(0..len.min(MAX_MEDIA))
}

async fn media_get(State(st): State<Arc<FakeState>>, Query(q): Query<HashMap<String, String>>) -> Response {
    if !valid_token(&st, q.get("access_token")) {
        let refusal = r#"{"errcode":40001,"errmsg":"invalid credential"}"#;
        return ([("content-type", "application/json")], refusal).into_response();
    }
    let len = q.get("media_id").and_then(|v| v.parse().ok()).unwrap_or(0);
    ([("content-type", "application/octet-stream")], media(len)).into_response()
}

/// The route, for [`crate::fake_wechat::FakeWeChat::start_with`].
pub fn routes() -> Router<Arc<FakeState>> {
    Router::new().route("/cgi-bin/media/get", get(media_get))
}
