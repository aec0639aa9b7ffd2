//! Process metrics in the Prometheus text format (`prometheus-client`): requests by interface and return code,
//! latency by interface, upstream calls by endpoint and result, credential cache hits / misses / refreshes /
//! remembered failures, storage operations and errors, build info. HTTP mode serves them on `GET /metrics`; an SCF
//! instance logs them as one JSON line every so many invocations (for CLS).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    interface: &'static str,
    code: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabels {
    interface: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    endpoint: &'static str,
    /// `ok`, `errcode_<n>`, `http_<status>`, `network`, `unreachable`, `bad_reply`.
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Credential cache events.
#[derive(Debug, Clone, Copy)]
pub enum CredEvent {
    /// Answered from this process's memory.
    Hit,
    /// Not in memory (read from storage, or fetched).
    Miss,
    /// Fetched upstream and stored.
    Refresh,
    /// Answered with a remembered upstream failure.
    RememberedFailure,
    /// A refresh whose lease was taken over meanwhile: its value was not stored (fenced out).
    Superseded,
}

impl CredEvent {
    fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Refresh => "refresh",
            Self::RememberedFailure => "remembered_failure",
            Self::Superseded => "superseded",
        }
    }
}

struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<InterfaceLabels, Histogram>,
    upstream: Family<UpstreamLabels, Counter>,
    /// One counter per [`CredEvent`], created up front (every event is counted from 0).
    credentials: [Counter; 5],
    storage_ops: Family<BackendLabels, Counter>,
    storage_errors: Family<BackendLabels, Counter>,
    api_security: Family<ResultLabels, Counter>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("wafer");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests by interface and return code", requests.clone());
        let latency = Family::<InterfaceLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(
                [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
                    .into_iter(),
            )
        });
        registry.register("request_seconds", "Request latency by interface", latency.clone());
        let upstream = Family::<UpstreamLabels, Counter>::default();
        registry.register("upstream_calls", "WeChat / WeCom calls by endpoint and result", upstream.clone());
        let credentials = Family::<EventLabels, Counter>::default();
        registry.register(
            "credential_events",
            "Credential cache hits, misses, upstream refreshes and remembered failures",
            credentials.clone(),
        );
        let storage_ops = Family::<BackendLabels, Counter>::default();
        registry.register("storage_operations", "Storage operations", storage_ops.clone());
        let storage_errors = Family::<BackendLabels, Counter>::default();
        registry.register("storage_errors", "Storage operations that failed", storage_errors.clone());
        let api_security = Family::<ResultLabels, Counter>::default();
        registry.register(
            "api_security_replies",
            "Replies to calls made with WeChat's API security, by outcome (verified, verified_deprecated_cert, \
             plain_error, unsigned_binary, rejected)",
            api_security.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "The running build", build);
        let credentials = [
            CredEvent::Hit,
            CredEvent::Miss,
            CredEvent::Refresh,
            CredEvent::RememberedFailure,
            CredEvent::Superseded,
        ]
        .map(|e| credentials.get_or_create(&EventLabels { event: e.label() }).clone());
        Metrics { registry, requests, latency, upstream, credentials, storage_ops, storage_errors, api_security }
    })
}

/// Series handles a thread has used, looked up by label without the family's lock and hash.
const HANDLES_PER_THREAD: usize = 64;

/// One answered request.
pub fn request(interface: &'static str, code: i64, seconds: f64) {
    use std::cell::RefCell;
    type Handles = Vec<(&'static str, i64, Counter, Histogram)>;
    thread_local!(static HANDLES: RefCell<Handles> = const { RefCell::new(Vec::new()) });
    let m = metrics();
    let counted = HANDLES.with(|h| {
        let Ok(mut handles) = h.try_borrow_mut() else { return false };
        if let Some((_, _, count, latency)) =
            handles.iter().find(|(i, c, _, _)| *c == code && *i == interface)
        {
            count.inc();
            latency.observe(seconds);
            return true;
        }
        if handles.len() >= HANDLES_PER_THREAD {
            return false;
        }
        let count = m.requests.get_or_create(&RequestLabels { interface, code }).clone();
        let latency = m.latency.get_or_create(&InterfaceLabels { interface }).clone();
        count.inc();
        latency.observe(seconds);
        handles.push((interface, code, count, latency));
        true
    });
    if !counted {
        m.requests.get_or_create(&RequestLabels { interface, code }).inc();
        m.latency.get_or_create(&InterfaceLabels { interface }).observe(seconds);
    }
}

/// One upstream call and how it ended.
pub fn upstream(endpoint: &'static str, result: String) {
    metrics().upstream.get_or_create(&UpstreamLabels { endpoint, result }).inc();
}

/// One reply to a call made with WeChat's API security, by outcome.
pub fn api_security(result: &'static str) {
    metrics().api_security.get_or_create(&ResultLabels { result }).inc();
}

pub fn credential(event: CredEvent) {
    metrics().credentials[event as usize].inc();
}

/// One storage operation of `backend`, failed or not.
pub fn storage(backend: &'static str, failed: bool) {
    let m = metrics();
    m.storage_ops.get_or_create(&BackendLabels { backend }).inc();
    if failed {
        m.storage_errors.get_or_create(&BackendLabels { backend }).inc();
    }
}

/// Everything, in the Prometheus text exposition format.
pub fn text() -> String {
    let mut out = String::new();
    if encode(&mut out, &metrics().registry).is_err() {
        out.clear();
    }
    out
}

/// The same samples as one JSON object (`{"name{labels}": value}`), for a log line.
pub fn json() -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for line in text().lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        if let Some((name, value)) = line.rsplit_once(' ') {
            if let Ok(v) = value.parse::<f64>() {
                map.insert(name.to_owned(), serde_json::json!(v));
            }
        }
    }
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_exposed_as_text_and_json() {
        request("qcloud.cam.auth", 0, 0.002);
        upstream("/cgi-bin/stable_token", "errcode_40164".into());
        credential(CredEvent::Hit);
        storage("sqlite", true);
        let text = text();
        assert!(text.contains(r#"wafer_requests_total{interface="qcloud.cam.auth",code="0"}"#), "{text}");
        assert!(text.contains(
            r#"wafer_upstream_calls_total{endpoint="/cgi-bin/stable_token",result="errcode_40164"}"#
        ));
        assert!(text.contains("wafer_build_info"));
        assert!(text.contains(r#"wafer_credential_events_total{event="remembered_failure"} 0"#), "{text}");
        let json = json();
        assert!(
            json.as_object().unwrap().keys().any(|k| k.starts_with("wafer_storage_errors_total")),
            "{json}"
        );
    }

    #[test]
    fn every_request_is_counted_beyond_the_threads_handles() {
        let count = |interface: &str, code: i64| {
            let text = text();
            let series = format!(r#"wafer_requests_total{{interface="{interface}",code="{code}"}} "#);
            text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |v| v.parse::<u64>().unwrap())
        };
        // A thread of its own: its handles start empty, and other tests' counts use other labels.
        std::thread::spawn(move || {
            for code in 0..(HANDLES_PER_THREAD as i64 + 10) {
                for _ in 0..3 {
                    request("test.metrics.handles", 70_000 + code, 0.001);
                }
            }
        })
        .join()
        .unwrap();
        for code in
            [0, 1, HANDLES_PER_THREAD as i64 - 1, HANDLES_PER_THREAD as i64, HANDLES_PER_THREAD as i64 + 9]
        {
            assert_eq!(count("test.metrics.handles", 70_000 + code), 3, "code {code}");
        }
        credential(CredEvent::Refresh);
        assert!(text().contains(r#"wafer_credential_events_total{event="refresh"} "#));
    }
}
