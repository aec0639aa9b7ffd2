//! Who may call what, decided in one place: [`Gate::authorize`] takes what an interface needs ([`Access`]) and what
//! the transport saw ([`RequestMeta`]) and answers with a [`Grant`] or a refusal. Caller keys are scoped to apps /
//! corps / COS APPIDs and checked on the key's own lists before any app lookup, so a refusal never reveals whether
//! an app exists; the admin token is compared in constant time; admin actions leave an [`Audit`] line.

use crate::clock::Clock;
use crate::crypto;
use crate::envelope::{ReturnCode, WaferError};
use crate::request::RequestMeta;
use crate::store::{CallerKeyRecord, KeyStore};
use futures_util::future::Either;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A presented key as memory knows it: the caller settled (none, refused, or verified lately), or a key to read.
enum Known<'k> {
    Settled(Result<Option<Caller>, WaferError>),
    Unread(&'k str),
}

/// What [`Gate::authorize`] returns: the decision ready, or a future that reads the caller's key first.
pub type Authorizing<'a> = Either<
    std::future::Ready<Result<Grant, WaferError>>,
    Pin<Box<dyn Future<Output = Result<Grant, WaferError>> + Send + 'a>>,
>;

/// How long a verified key is trusted from memory (a revocation takes effect within this).
pub const KEY_CACHE_SECS: i64 = 10;
/// Longest interval between two `last_used_at` writes for one key.
pub const KEY_TOUCH_SECS: i64 = 60;

/// `WAFER_CALLER_AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CallerAuthMode {
    /// Token, ticket, signature and COS interfaces need a key covering the app asked for; sessions stay open.
    Credentials,
    /// Every interface needs a key (admin interfaces need the admin token instead).
    All,
    /// No caller authentication (the seed's behaviour; for migrations only).
    Off,
}

/// What a request is about, for the scope check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// A WeChat appid, or a Tencent Cloud APPID for COS.
    App(&'a str),
    /// A WeCom corpid.
    Corp(&'a str),
}

impl<'a> Scope<'a> {
    /// What a caller key must cover to reach `owner`'s credentials: the app, or the agent's corp.
    pub fn of(owner: &'a crate::tokens::Owner) -> Self {
        match owner {
            crate::tokens::Owner::App(a) => Self::App(a),
            crate::tokens::Owner::Agent { corpid, .. } => Self::Corp(corpid),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    record: Arc<CallerKeyRecord>,
}

impl Caller {
    /// The key's name, for logs.
    pub fn name(&self) -> &str {
        &self.record.name
    }

    pub fn covers(&self, target: Scope<'_>) -> bool {
        let r = &self.record;
        r.scope_all
            || match target {
                Scope::App(a) => r.scope_apps.iter().any(|x| x == a),
                Scope::Corp(c) => r.scope_corps.iter().any(|x| x == c),
            }
    }

    /// Whether the key may make token-free calls to `path` — the upstream form of the path
    /// ([`crate::wechat::path::ApiPath`]) — a key without path limits may call any. Prefixes end at a segment:
    /// `/wxa` covers `/wxa/…`, not `/wxapp/…`.
    pub fn allows_path(&self, path: &str) -> bool {
        let apis = &self.record.scope_apis;
        apis.is_empty() || apis.iter().any(|p| crate::wechat::path::under(path, p))
    }

    /// Whether the key is limited to API paths (`--apis`): such a key makes token-free calls only and never
    /// receives a raw token or ticket, which would let it call any API directly for as long as the token lives.
    pub fn limited_to_paths(&self) -> bool {
        !self.record.scope_apis.is_empty()
    }

    /// CALLER_KEY_FORBIDDEN unless the key covers `target`.
    pub fn require(&self, target: Scope<'_>) -> Result<(), WaferError> {
        if self.covers(target) {
            Ok(())
        } else {
            Err(WaferError::new(
                ReturnCode::CallerKeyForbidden,
                "this caller key is not allowed for the app asked for",
            ))
        }
    }
}

/// A new caller key: `wk_` and 192 random bits in hex.
pub fn new_key() -> Result<String, getrandom::Error> {
    Ok(format!("wk_{}", crypto::random_hex(24)?))
}

pub fn missing() -> WaferError {
    WaferError::new(
        ReturnCode::CallerKeyMissing,
        "this interface needs a caller key (X-Wafer-Key header or key query parameter)",
    )
}

fn invalid() -> WaferError {
    WaferError::new(ReturnCode::CallerKeyInvalid, "the caller key is unknown or revoked")
}

struct CachedKey {
    record: Arc<CallerKeyRecord>,
    loaded_at: i64,
}

/// Which authorisation an interface needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// Mini-program session interfaces (open in `credentials` mode); the appid if the request names one.
    Session(Option<&'a str>),
    /// A raw token or ticket of an app / corp: a caller key covering it and not limited to API paths.
    Credential(Scope<'a>),
    /// A signature made with an app's ticket or a COS key (JS-SDK config, COS upload) that reveals no credential:
    /// a caller key covering the app / corp / COS APPID, path limits or not.
    Signature(Scope<'a>),
    /// A token-free call to an API `path` of an app / corp: a caller key covering both.
    Call(Scope<'a>, &'a str),
    /// Admin interfaces: the admin token (`X-Wafer-Admin-Token`, or `para.admin_token` on direct invocations).
    Admin { para_token: Option<&'a str> },
}

/// What the gate let through.
#[derive(Debug, Default)]
pub struct Grant {
    /// The caller whose key was presented and verified, if any (for logs).
    pub caller: Option<Caller>,
    /// In `all` mode: a caller whose key must also cover the app of the session the request names (checked by the
    /// session handlers once they know that app, before anything is touched).
    pub session_scope: Option<Caller>,
}

/// The one authorisation gate: caller-key mode, verified keys (with a short positive cache so hot paths need no
/// storage read) and the admin token.
pub struct Gate {
    mode: CallerAuthMode,
    /// SHA-256 of `WAFER_ADMIN_TOKEN`; `None`: admin interfaces are off.
    admin_token_hash: Option<String>,
    keys: Arc<dyn KeyStore>,
    clock: Arc<dyn Clock>,
    /// Verified keys by the key presented. Hashed with foldhash, not SipHash: only verified keys are ever put in,
    /// so a caller cannot fill it with names chosen to collide, and a lookup is a good part of a cached token's work.
    cache: Mutex<HashMap<String, CachedKey, foldhash::fast::RandomState>>,
    /// Failed admin authentications per source address this minute.
    admin_failures: RateLimiter,
}

/// Failed admin authentications allowed per source address per minute in each process; beyond it every admin
/// attempt from that address is refused until the minute ends, the right token included.
pub const ADMIN_FAILURES_PER_MINUTE: u32 = 10;

impl Gate {
    pub fn new(
        mode: CallerAuthMode,
        admin_token: Option<&str>,
        keys: Arc<dyn KeyStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let admin_token_hash = admin_token.map(|t| crypto::sha256_hex(t.as_bytes()));
        Self {
            mode,
            admin_token_hash,
            keys,
            clock,
            cache: Mutex::new(HashMap::default()),
            admin_failures: RateLimiter::default(),
        }
    }

    pub fn mode(&self) -> CallerAuthMode {
        self.mode
    }

    /// Decide whether a request that needs `access` may go on. A presented caller key is verified in every mode but
    /// `off` (an invalid key is refused even where none is needed); scope is checked on the key's own lists. The
    /// decision comes ready as it is when the key is one verified lately (nearly every request): no future to
    /// build and move; a key read from storage first makes it a boxed one.
    pub fn authorize<'a>(&'a self, access: Access<'a>, meta: &'a RequestMeta) -> Authorizing<'a> {
        let caller = match self.mode {
            CallerAuthMode::Off => Ok(None),
            _ => match self.known(meta.caller_key.as_deref()) {
                Known::Settled(caller) => caller,
                Known::Unread(key) => {
                    return Either::Right(Box::pin(async move {
                        let caller = self.load(key).await?;
                        self.decide(Some(caller), access, meta)
                    }))
                }
            },
        };
        Either::Left(std::future::ready(caller.and_then(|c| self.decide(c, access, meta))))
    }

    /// The decision, once the caller is known.
    fn decide(
        &self,
        caller: Option<Caller>,
        access: Access<'_>,
        meta: &RequestMeta,
    ) -> Result<Grant, WaferError> {
        match (self.mode, access) {
            (_, Access::Admin { para_token }) => {
                if para_token.is_some() && !meta.direct && meta.admin_token.is_none() {
                    return Err(WaferError::new(
                        ReturnCode::AdminAuthErr,
                        "para.admin_token is accepted on direct SCF invocations only: send the X-Wafer-Admin-Token header",
                    ));
                }
                self.require_admin(meta.admin_token.as_deref().or(para_token.filter(|_| meta.direct)), meta)?;
                Ok(Grant { caller, session_scope: None })
            }
            (CallerAuthMode::Off, _) | (CallerAuthMode::Credentials, Access::Session(_)) => {
                Ok(Grant { caller, session_scope: None })
            }
            (_, Access::Credential(scope)) => {
                let c = caller.as_ref().ok_or_else(missing)?;
                c.require(scope)?;
                if c.limited_to_paths() {
                    return Err(WaferError::new(
                        ReturnCode::CallerKeyForbidden,
                        "this caller key is limited to API paths (--apis): it may make token-free calls, \
                         never receive a raw token or ticket",
                    ));
                }
                Ok(Grant { caller, session_scope: None })
            }
            (_, Access::Signature(scope)) => {
                caller.as_ref().ok_or_else(missing)?.require(scope)?;
                Ok(Grant { caller, session_scope: None })
            }
            (_, Access::Call(scope, path)) => {
                let c = caller.as_ref().ok_or_else(missing)?;
                c.require(scope)?;
                if !c.allows_path(path) {
                    return Err(WaferError::new(
                        ReturnCode::CallerKeyForbidden,
                        "this caller key is not allowed to call this API path",
                    ));
                }
                Ok(Grant { caller, session_scope: None })
            }
            (CallerAuthMode::All, Access::Session(given)) => {
                let c = caller.ok_or_else(missing)?;
                if let Some(a) = given {
                    c.require(Scope::App(a))?;
                }
                Ok(Grant { caller: Some(c.clone()), session_scope: Some(c) })
            }
        }
    }

    /// `GET /metrics` on the main listener: the admin token, as `Authorization: Bearer …` (what Prometheus sends
    /// with `authorization: {credentials: …}`) or `X-Wafer-Admin-Token`; failures are limited like any admin call.
    pub fn authorize_metrics(&self, meta: &RequestMeta) -> Result<(), WaferError> {
        self.require_admin(meta.admin_token.as_deref().or(meta.caller_key.as_deref()), meta)
    }

    /// The admin token, compared in constant time (hashes of equal length). Failures are logged and limited per
    /// source address ([`ADMIN_FAILURES_PER_MINUTE`]).
    fn require_admin(&self, presented: Option<&str>, meta: &RequestMeta) -> Result<(), WaferError> {
        let Some(expected) = self.admin_token_hash.as_deref() else {
            return Err(WaferError::new(
                ReturnCode::AdminAuthErr,
                "admin interfaces are disabled on this server (WAFER_ADMIN_TOKEN is not set)",
            ));
        };
        let source = meta.source_ip.as_deref().unwrap_or("-");
        let now = self.clock.now();
        if self.admin_failures.spent(source, ADMIN_FAILURES_PER_MINUTE, now) {
            tracing::warn!(source_ip = source, request_id = %meta.request_id, "admin authentication refused: too many failures from this address");
            return Err(WaferError::new(
                ReturnCode::AdminAuthErr,
                "too many failed admin authentications from this address; try again in a minute",
            ));
        }
        let presented = crypto::sha256_hex(presented.unwrap_or("").as_bytes());
        if crypto::ct_eq(presented.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            self.admin_failures.allow(source, u32::MAX, now);
            tracing::warn!(source_ip = source, request_id = %meta.request_id, "admin authentication failed");
            Err(WaferError::new(ReturnCode::AdminAuthErr, "a valid admin token is required"))
        }
    }

    /// The caller a presented key belongs to when that is settled without storage — no key, one too long to be
    /// any, one verified within [`KEY_CACHE_SECS`] — or the key to read.
    fn known<'k>(&self, presented: Option<&'k str>) -> Known<'k> {
        let Some(key) = presented.filter(|k| !k.is_empty()) else {
            return Known::Settled(Ok(None));
        };
        if key.len() > 256 {
            return Known::Settled(Err(invalid()));
        }
        let now = self.clock.now();
        // Looked up by the presented key itself: a hit costs no digest (only verified keys are ever kept).
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(key).filter(|c| now - c.loaded_at < KEY_CACHE_SECS) {
            Some(c) => Known::Settled(Ok(Some(Caller { record: Arc::clone(&c.record) }))),
            None => Known::Unread(key),
        }
    }

    /// The caller key `key` is, read from storage and kept in memory; CALLER_KEY_INVALID for an unknown or revoked
    /// key.
    async fn load(&self, key: &str) -> Result<Caller, WaferError> {
        let now = self.clock.now();
        let hash = crypto::sha256_hex(key.as_bytes());
        let r = self.keys.caller_key_by_hash(&hash).await.map_err(WaferError::db)?.ok_or_else(invalid)?;
        // Constant-time confirmation of the hash the index found.
        if !crypto::ct_eq(r.key_hash.as_bytes(), hash.as_bytes()) || r.revoked_at != 0 {
            self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
            return Err(invalid());
        }
        if now - r.last_used_at >= KEY_TOUCH_SECS {
            if let Err(e) = self.keys.touch_caller_key(&r.name, now).await {
                tracing::warn!(error = %e, "could not record caller key use");
            }
        }
        let record = Arc::new(CallerKeyRecord { last_used_at: now, ..r });
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), CachedKey { record: Arc::clone(&record), loaded_at: now });
        Ok(Caller { record })
    }
}

/// One audit line for an admin action: what, on what, by whom (source IP, request id, how the token came).
pub struct Audit<'a> {
    pub action: &'static str,
    /// What the action was about, e.g. `corpid/agentid` (never a secret).
    pub subject: &'a str,
    pub meta: &'a RequestMeta,
    pub at: i64,
}

impl Audit<'_> {
    /// Write the line (`outcome`: e.g. "added", "replaced").
    pub fn log(&self, outcome: &str) {
        tracing::info!(
            admin_action = self.action,
            subject = %self.subject,
            outcome,
            request_id = %self.meta.request_id,
            source_ip = self.meta.source_ip.as_deref().unwrap_or("-"),
            via = if self.meta.admin_token.is_some() { "header" } else { "para.admin_token" },
            at = self.at,
            "admin action"
        );
    }
}

/// Most keys (apps, source addresses) counted in one minute. Beyond it a new key is let through uncounted (and a
/// warning logged once that minute): past that many distinct sources per-source limits bound nothing anyway, while
/// refusing would lock out every new user; the per-app limit, on registered apps only, still holds.
pub const MAX_TRACKED_KEYS: usize = 100_000;

/// Fixed one-minute windows of counts per key (an app, a source address), in this process. The counts of a minute
/// are dropped whole when the next begins (no scan), and at most [`MAX_TRACKED_KEYS`] are kept.
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    minute: i64,
    counts: HashMap<String, u32>,
    /// Whether the cap was reported this minute.
    full_said: bool,
}

impl RateLimiter {
    /// Count one event for `key` at `now`; false when `limit` events already happened in this minute.
    pub fn allow(&self, key: &str, limit: u32, now: i64) -> bool {
        self.window(now, |counts, full| match counts.get_mut(key) {
            Some(n) if *n >= limit => false,
            Some(n) => {
                *n += 1;
                true
            }
            None if full => true,
            None if limit == 0 => false,
            None => {
                counts.insert(key.to_owned(), 1);
                true
            }
        })
    }

    /// Whether `limit` events were already counted for `key` this minute (nothing is counted).
    pub fn spent(&self, key: &str, limit: u32, now: i64) -> bool {
        self.window(now, |counts, _| counts.get(key).is_some_and(|n| *n >= limit))
    }

    /// Keys counted in the current window.
    pub fn tracked(&self) -> usize {
        self.windows.lock().unwrap_or_else(|p| p.into_inner()).counts.len()
    }

    /// Run `f` on the counts of the minute of `now` (starting a new minute's if due) and whether they are full.
    fn window<T>(&self, now: i64, f: impl FnOnce(&mut HashMap<String, u32>, bool) -> T) -> T {
        let minute = now.div_euclid(60);
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let old = if w.minute != minute {
            w.minute = minute;
            w.full_said = false;
            Some(std::mem::take(&mut w.counts))
        } else {
            None
        };
        let full = w.counts.len() >= MAX_TRACKED_KEYS;
        if full && !w.full_said {
            w.full_said = true;
            tracing::warn!(
                max = MAX_TRACKED_KEYS,
                "rate limiter: too many sources this minute; new ones pass uncounted"
            );
        }
        let out = f(&mut w.counts, full);
        drop(w);
        drop(old); // last minute's counts are freed outside the lock
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_counts_per_minute_and_keeps_a_bounded_map() {
        let l = RateLimiter::default();
        let t = 6_000;
        assert!(l.allow("a", 2, t) && l.allow("a", 2, t + 1));
        assert!(!l.allow("a", 2, t + 2), "third in the minute");
        assert!(l.allow("b", 2, t + 2), "another key has its own count");
        assert!(l.allow("a", 2, t + 60), "a new minute starts afresh");
        assert_eq!(l.tracked(), 1, "the last minute's keys are gone");
        assert!(!l.allow("z", 0, t + 60), "a zero limit refuses");
        for i in 0..MAX_TRACKED_KEYS + 10 {
            l.allow(&format!("ip{i}"), 5, t + 61);
        }
        assert_eq!(l.tracked(), MAX_TRACKED_KEYS, "hard cap on tracked keys");
        assert!(l.allow("a", 2, t + 61), "a key already counted keeps its count");
        assert!(!l.allow("a", 2, t + 61));
        assert!(l.spent("a", 2, t + 61) && !l.spent("ip1", 2, t + 61) && !l.spent("new", 1, t + 61));
    }
}
