//! Access tokens and tickets with exactly one upstream refresh per expiry window per key, however many callers
//! and processes ask.
//!
//! Three layers, each guarding the next:
//! 1. an in-process cache answering hits without touching storage (re-read from storage at most every
//!    `revalidate_secs`, so a refresh by another process is picked up well inside WeChat's 5-minute overlap);
//! 2. single-flight per key inside the process (one task looks at storage; the others wait for it);
//! 3. a lease row in the shared store: the one process holding it refreshes, renewing the short lease while its
//!    fetch runs; a holder that dies or is frozen lets it run out (about two seconds) and the next process takes
//!    over at once. Every write of a refresh is fenced by the lease's generation: a holder frozen past its lease
//!    stores nothing and adopts the value stored since. Others serve the still-valid old value, or wait — never
//!    longer than the caller's budget (one upstream deadline plus 2 s), then get `1028 REFRESH_IN_PROGRESS`.
//!
//! Concurrent callers in a process share one fetch and its outcome: a failure is remembered per key
//! ([`failures`]) and answered at once, with no upstream call, until its window ends.
//!
//! `force` means "the value I have is bad": it refreshes only if the current value is the one the caller saw
//! (compare-then-expire), or — when the caller names none — if the current value is older than a cooldown.

pub mod failures;
mod fetch;
pub mod issued;
mod owner;
use owner::Recheck;
mod decide;
mod keys;
mod refresh;
use refresh::Refreshed;

use decide::{decide, Step};

pub use keys::{CredKey, CredKind, Owner};

use crate::metrics::CredEvent;
use failures::Failures;
use fetch::FetchError;

use crate::clock::Clock;
use crate::envelope::{ReturnCode, WaferError};
use crate::store::Storage;
use crate::wechat::wecom::WeComClient;
use crate::wechat::WeChatClient;
use futures_util::future::Either;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Tuning of the refresh protocol. The defaults suit production; tests shorten the lease.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Refresh this long before expiry (capped at a quarter of the value's lifetime).
    pub margin_secs: i64,
    /// A `force` that names no value refreshes only if the current value is at least this old.
    pub force_cooldown_secs: i64,
    /// A `force` that names the current value refreshes only if it is at least this old (a cooldown after any
    /// refresh, so a key holder cannot burn the app's quota in a loop).
    pub force_min_interval_secs: i64,
    /// How long a refresher's lease holds unless renewed: the holder renews it every third of this while its fetch
    /// runs, so a holder that dies or is frozen is taken over within this long (whatever the upstream deadline).
    pub lease_ms: i64,
    /// The longest a caller waits for a credential, whatever happens upstream or in other processes.
    pub budget_ms: i64,
    /// In-process cache entries are re-read from storage after this long.
    pub revalidate_secs: i64,
    /// Upstream fetches allowed per hour per ticket key (WeCom: 100/hour per app).
    pub ticket_budget_per_hour: i64,
    /// Forced token refreshes allowed per app per (Beijing) day, across processes (WeChat allows 20 forced
    /// stable-token refreshes a day).
    pub force_per_day: i64,
    /// Forced token refreshes allowed per app per hour, across processes (so one hour cannot spend the day).
    pub force_per_hour: i64,
    /// Attempts for an upstream "system busy" (-1) reply, with doubling backoff from `busy_backoff_ms`.
    pub busy_attempts: u32,
    pub busy_backoff_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            margin_secs: 300,
            force_cooldown_secs: 30,
            force_min_interval_secs: 10,
            lease_ms: DEFAULT_LEASE_MS,
            budget_ms: 7_000,
            revalidate_secs: 60,
            ticket_budget_per_hour: 100,
            force_per_day: 10,
            force_per_hour: 4,
            busy_attempts: 3,
            busy_backoff_ms: 200,
        }
    }
}

/// A refresher's lease unless configured (`WAFER_TOKEN_LEASE_MS`): short, because it is renewed while in use.
pub const DEFAULT_LEASE_MS: i64 = 2_000;

/// What the caller said about the value it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Force<'a> {
    /// A normal request: any valid value will do.
    No,
    /// The caller's value is bad. `Some(v)`: refresh only if the current value is still `v` — and, against abuse,
    /// not within `force_min_interval_secs` of the last fetch.
    Yes(Option<&'a str>),
    /// WeChat itself rejected exactly this value (a ticket or proxied call got 40001): refresh if it is still
    /// current, with no cooldown.
    Rejected(&'a str),
}

/// A value handed to a caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Served {
    pub value: String,
    /// Unix seconds when it expires.
    pub expires_at: i64,
    /// Fetched upstream by this request (NEW_*) rather than served from a cache (OLD_*).
    pub fresh: bool,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").field("expires_at", &self.expires_at).field("fresh", &self.fresh).finish()
    }
}

#[derive(Clone)]
struct Cached {
    value: String,
    expires_at: i64,
    fetched_at: i64,
    loaded_at: i64,
    /// When the app / agent was last seen registered (a memory hit re-checks it after [`OWNER_RECHECK_SECS`]).
    owner_seen: i64,
}

/// A value served from memory re-checks that its app / agent is still registered this often, so a removal in
/// another process stops it within this many seconds (this process forgets at once).
pub const OWNER_RECHECK_SECS: i64 = 10;

/// The credential manager. One per process, shared by every request.
pub struct Credentials {
    store: Storage,
    wechat: WeChatClient,
    wecom: WeComClient,
    clock: Arc<dyn Clock>,
    policy: Policy,
    owner: String,
    /// Values in memory by key text. Hashed with foldhash, not SipHash: its keys are registered apps' and agents',
    /// never a caller's choice, and the lookup is on every cached token's path.
    cache: Mutex<HashMap<String, Cached, foldhash::fast::RandomState>>,
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    failures: Failures,
    issued: issued::Issued,
    /// SHA-256 of the secret each key's owner was last read with: a re-check that finds another drops the value.
    owner_secrets: Mutex<HashMap<String, String>>,
}

/// Unix seconds of the next 00:00 in Beijing (UTC+8), when WeChat's daily quotas reset.
pub fn next_quota_reset(now: i64) -> i64 {
    const OFFSET: i64 = 8 * 3600;
    ((now + OFFSET).div_euclid(86_400) + 1) * 86_400 - OFFSET
}

/// The moment a value should be refreshed: `margin` before expiry, capped at a quarter of its lifetime.
fn stale_at(expires_at: i64, fetched_at: i64, margin: i64) -> i64 {
    let lifetime = (expires_at - fetched_at).max(0);
    expires_at - margin.min(lifetime / 4)
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What [`Credentials::get`] returns: a memory hit ready as it is, or the general path's future.
pub type Getting<'a> =
    Either<std::future::Ready<Result<Served, WaferError>>, BoxFut<'a, Result<Served, WaferError>>>;

impl Credentials {
    pub fn new(
        store: Storage,
        wechat: WeChatClient,
        wecom: WeComClient,
        clock: Arc<dyn Clock>,
        policy: Policy,
    ) -> Self {
        let owner = format!(
            "{}-{}",
            std::process::id(),
            crate::crypto::random_hex(6).unwrap_or_else(|_| "000000000000".into())
        );
        Self {
            store,
            wechat,
            wecom,
            clock,
            policy,
            owner,
            cache: Mutex::new(HashMap::default()),
            flights: Mutex::new(HashMap::new()),
            failures: Failures::default(),
            issued: issued::Issued::default(),
            owner_secrets: Mutex::new(HashMap::new()),
        }
    }

    /// Forced refreshes allowed per app per day.
    pub fn force_budget(&self) -> i64 {
        self.policy.force_per_day
    }

    /// Forget this process's cached values and remembered failures for `keys` (the registration changed).
    pub fn forget(&self, keys: &[String]) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            cache.remove(k);
            self.failures.clear(k);
        }
    }

    /// Forget every token the drop-in token host handed out for `keys` (the app or agent was removed or given a
    /// new secret here; other processes notice within [`OWNER_RECHECK_SECS`]).
    pub fn forget_issued(&self, keys: &[String]) {
        self.issued.forget(keys);
    }

    fn cached(&self, key: &str) -> Option<Cached> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    fn remember(&self, key: &str, value: &str, expires_at: i64, fetched_at: i64) {
        let loaded_at = self.clock.now();
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key.to_owned(),
            Cached { value: value.to_owned(), expires_at, fetched_at, loaded_at, owner_seen: loaded_at },
        );
    }

    fn flight(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.flights.lock().unwrap_or_else(|p| p.into_inner()).entry(key.to_owned()).or_default().clone()
    }

    /// A memory hit — usable, not due for refresh, not due for revalidation — with when its owner was last seen
    /// registered. One lock, and only the value is cloned (this is the hot path).
    fn memory_hit(&self, key: &str, now: i64) -> Option<(Served, i64)> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let c = cache.get(key)?;
        let fresh_enough = now < stale_at(c.expires_at, c.fetched_at, self.policy.margin_secs)
            && now - c.loaded_at < self.policy.revalidate_secs;
        fresh_enough.then(|| {
            (Served { value: c.value.clone(), expires_at: c.expires_at, fresh: false }, c.owner_seen)
        })
    }

    /// A memory hit whose owner needs no re-reading, counted as a hit; `None`, counting nothing, otherwise (the
    /// general path then counts it).
    fn settled_hit(&self, key: &CredKey) -> Option<Served> {
        let now = self.clock.now();
        // The key's text written into this thread's buffer: no allocation per hit.
        thread_local!(static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
        let (hit, seen) = TEXT.with(|t| match t.try_borrow_mut() {
            Ok(mut text) => {
                key.write_text(&mut text);
                self.memory_hit(&text, now)
            }
            Err(_) => self.memory_hit(&key.text(), now),
        })?;
        owner::seen_lately(seen, now).then(|| {
            crate::metrics::credential(CredEvent::Hit);
            hit
        })
    }

    /// A memory hit, counted as a hit or a miss.
    fn counted_hit(&self, key: &str, now: i64) -> Option<(Served, i64)> {
        let hit = self.memory_hit(key, now);
        crate::metrics::credential(if hit.is_some() { CredEvent::Hit } else { CredEvent::Miss });
        hit
    }

    /// The current value for `key`: from memory, from storage, or fetched upstream by exactly one process.
    /// Never takes longer than the policy's budget.
    pub fn get<'a>(&'a self, key: &'a CredKey, force: Force<'a>) -> Getting<'a> {
        // The usual call — a value in memory whose owner was checked lately — is answered here, without the general
        // path's future (about 6 KB, allocated and copied on every call) and its deadline read from the clock.
        if force == Force::No {
            if let Some(hit) = self.settled_hit(key) {
                // Ready as it is: not boxed either.
                return Either::Left(std::future::ready(Ok(hit)));
            }
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.policy.budget_ms.max(0) as u64);
        Either::Right(self.get_until(key, force, deadline))
    }

    fn get_until<'a>(
        &'a self,
        key: &'a CredKey,
        force: Force<'a>,
        deadline: tokio::time::Instant,
    ) -> BoxFut<'a, Result<Served, WaferError>> {
        Box::pin(async move {
            // An upstream rejection is a named force without the cooldown.
            let (force, cooled) = match force {
                Force::Rejected(v) => (Force::Yes(Some(v)), false),
                f => (f, true),
            };
            let k = key.text();
            if force == Force::No {
                let now = self.clock.now();
                if let Some((hit, seen)) = self.counted_hit(&k, now) {
                    match self.owner_still_registered(key, &k, seen, now).await? {
                        Recheck::Same => return Ok(hit),
                        Recheck::Gone => return Err(FetchError::NotConfigured.into_wafer(key)),
                        // Read from storage again (the new registration dropped the old value there).
                        Recheck::Rekeyed => {}
                    }
                }
            }
            if let Some(answer) = self.remembered(&k, force).await {
                return answer;
            }
            // A key never seen by this process: make sure its app/agent exists before any lease row or
            // single-flight entry is created for it (requests for made-up appids must not grow either).
            if self.cached(&k).is_none() && !self.owner_exists(key).await? {
                return Err(FetchError::NotConfigured.into_wafer(key));
            }
            let flight = self.flight(&k);
            let Ok(_guard) = tokio::time::timeout_at(deadline, flight.lock()).await else {
                return Err(waited_too_long());
            };
            loop {
                let now = self.clock.now();
                if force == Force::No {
                    if let Some((hit, _)) = self.memory_hit(&k, now) {
                        return Ok(hit);
                    }
                }
                // The fetch this caller queued behind may have just failed: share its outcome.
                if let Some(answer) = self.remembered(&k, force).await {
                    return answer;
                }
                let row = self.read_row(key, &k).await?;
                let now_ms = self.clock.now_ms();
                let (forced_against, usable_old) =
                    match decide(&row, force, cooled, key.kind.is_ticket(), now, now_ms, &self.policy) {
                        Step::Current(served) => {
                            self.remember(&k, &served.value, row.expires_at, row.fetched_at);
                            return Ok(served);
                        }
                        Step::Answer(answer) => return answer,
                        Step::Shared { error, until_ms, usable_old } => {
                            self.failures.remember(&k, &error, until_ms, now_ms);
                            return usable_old.ok_or(error);
                        }
                        Step::Fetch { forced_against, usable_old } => (forced_against, usable_old),
                    };
                let leased = self
                    .store
                    .credentials
                    .try_lease(&k, &self.owner, now_ms, now_ms + self.policy.lease_ms)
                    .await
                    .map_err(|e| self.store_err(key, e))?;
                if let Some(fence) = leased {
                    // Someone may have stored a new value between our read and our lease.
                    let again = self.read_row(key, &k).await?;
                    if again.fetched_at > row.fetched_at && again.value.is_some() && now < again.expires_at {
                        let lease = crate::store::Lease { owner: &self.owner, fence };
                        let _ = self.store.credentials.release_lease(&k, lease).await;
                        continue;
                    }
                    let attempt = Attempt {
                        forced_against: forced_against.as_deref(),
                        usable_old,
                        row: &row,
                        deadline,
                        fence,
                    };
                    match self.refresh(key, &k, now, attempt).await {
                        Refreshed::Done(answer) => return answer,
                        // Another instance took over while this one fetched: read again (its value, or wait).
                        Refreshed::Superseded => continue,
                    }
                }
                if let Some(old) = usable_old {
                    return Ok(old);
                }
                // Another instance holds the lease: poll until it stores a value or its lease runs out (then
                // `try_lease` takes over at once), within this caller's budget.
                if tokio::time::Instant::now() + Duration::from_millis(25) >= deadline {
                    return Err(waited_too_long());
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    }

    /// The stored row of `key` (a default, empty row when there is none).
    async fn read_row(&self, key: &CredKey, k: &str) -> Result<crate::store::CredentialRow, WaferError> {
        Ok(self
            .store
            .credentials
            .get_credential(k)
            .await
            .map_err(|e| self.store_err(key, e))?
            .unwrap_or_default())
    }

    fn store_err(&self, key: &CredKey, e: crate::store::StoreError) -> WaferError {
        let code = match key.kind {
            CredKind::MpToken | CredKind::WcToken => ReturnCode::ChangeTokenErr,
            CredKind::MpJsapiTicket | CredKind::WcCorpTicket => ReturnCode::ChangeTicketErr,
            CredKind::WcAgentTicket => ReturnCode::ChangeAgentTicketErr,
        };
        WaferError::new(code, "credential storage failed").with_detail(e)
    }
}

/// What one refresh works with: the row it was decided on, what the caller found bad, and its budget.
pub(crate) struct Attempt<'a> {
    /// `Some(v)`: a forced refresh because the caller found `v` bad (the current value is not due otherwise).
    pub forced_against: Option<&'a str>,
    /// A still-valid value to serve if the refresh fails.
    pub usable_old: Option<Served>,
    pub row: &'a crate::store::CredentialRow,
    pub deadline: tokio::time::Instant,
    /// The lease's fence: every write of this refresh names it.
    pub fence: i64,
}

/// The error another instance remembered on the row.
fn shared_error(row: &crate::store::CredentialRow) -> WaferError {
    let code = ReturnCode::from_code(row.failed_code).unwrap_or(ReturnCode::WeixinNetErr);
    let message = if row.failed_message.is_empty() {
        "the last upstream fetch failed; retrying shortly".to_owned()
    } else {
        row.failed_message.clone()
    };
    WaferError::new(code, message)
}

/// The answer to a caller whose budget ran out while another task or instance was refreshing: its own code, never
/// an upstream error (nothing here says WeChat failed).
fn waited_too_long() -> WaferError {
    WaferError::new(
        ReturnCode::RefreshInProgress,
        "another instance is refreshing this credential and did not finish within this request's budget; retry",
    )
}

fn hour_start(now: i64) -> i64 {
    now - now.rem_euclid(3600)
}

fn quota_error(code: i64, until: i64) -> WaferError {
    WaferError::new(
        ReturnCode::WeixinQuotaErr,
        format!("upstream daily quota used up (errcode {code}); no calls until {until} (Unix time)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_resets_at_beijing_midnight() {
        // 2024-01-01 15:59:59 UTC = 23:59:59 Beijing → resets one second later.
        assert_eq!(next_quota_reset(1_704_124_799), 1_704_124_800);
        assert_eq!(next_quota_reset(1_704_124_800), 1_704_124_800 + 86_400);
    }

    #[test]
    fn stale_point_is_capped_for_short_lifetimes() {
        assert_eq!(stale_at(7200, 0, 300), 6900);
        assert_eq!(stale_at(100, 0, 300), 75);
        assert_eq!(stale_at(0, 0, 300), 0);
    }
}
