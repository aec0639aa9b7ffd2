//! The storage side of a refresh: answering from a remembered failure (re-checked against the shared row), and
//! storing a fetched value — or the failure, for every instance — under the lease.

use super::failures::{self, Remembered};
use super::fetch::FetchError;
use super::{hour_start, next_quota_reset, shared_error, Attempt, CredKey, Credentials, Force, Served};

/// How a refresh ended.
pub(super) enum Refreshed {
    /// The caller's answer: the fresh value, a still-usable old one, or the error.
    Done(Result<Served, WaferError>),
    /// The lease was taken over while fetching: nothing was written; read the row again.
    Superseded,
}
use crate::envelope::WaferError;
use crate::metrics::CredEvent;
use crate::store::{FailedFetch, Lease, NewValue};
use crate::wechat::UpstreamError;

impl Credentials {
    /// A remembered failure for `key`, as the answer to give: a still-valid cached value when there is one the
    /// caller may have, else the remembered error. `None`: nothing remembered (or it was cleared elsewhere).
    pub(super) async fn remembered(&self, k: &str, force: Force<'_>) -> Option<Result<Served, WaferError>> {
        let now_ms = self.clock.now_ms();
        let error = match self.failures.check(k, now_ms)? {
            Remembered::Failed(e) => e,
            Remembered::Recheck => match self.store.credentials.get_credential(k).await {
                Ok(row) => {
                    let row = row.unwrap_or_default();
                    if row.failed_until_ms <= now_ms {
                        // Cleared elsewhere: a success, or `app add` / `agent add` deleted the row.
                        self.failures.clear(k);
                        return None;
                    }
                    let e = shared_error(&row);
                    self.failures.remember(k, &e, row.failed_until_ms, now_ms);
                    e
                }
                Err(_) => self.failures.error(k)?,
            },
        };
        let now = self.clock.now();
        let usable = self.cached(k).filter(|c| {
            now < c.expires_at
                && match force {
                    Force::No => true,
                    Force::Yes(Some(seen)) => c.value != seen,
                    Force::Rejected(seen) => c.value != seen,
                    Force::Yes(None) => false,
                }
        });
        Some(match usable {
            Some(c) => Ok(Served { value: c.value, expires_at: c.expires_at, fresh: false }),
            None => {
                crate::metrics::credential(CredEvent::RememberedFailure);
                Err(error)
            }
        })
    }

    /// Fetch upstream while holding the lease (renewed while the fetch runs), store the value under the lease's
    /// fence, release the lease. A failure is remembered and logged once here; callers that share it are not logged
    /// again. When the lease was taken over meanwhile (this process was frozen, or cut off from storage), nothing
    /// is written: [`Refreshed::Superseded`], and the caller reads again what the new holder stores.
    pub(super) async fn refresh(&self, key: &CredKey, k: &str, now: i64, a: Attempt<'_>) -> Refreshed {
        let lease = Lease { owner: &self.owner, fence: a.fence };
        let (usable_old, failed_before) = (a.usable_old.clone(), a.row.failed_count);
        let fetched = match self.renewing(k, lease, self.fetch(key, &a)).await {
            Ok(f) => f,
            Err(e) => {
                // WeChat's 45009 is a daily quota; WeCom's is a frequency limit (remembered for a short, growing
                // window below instead).
                if let (FetchError::Upstream(UpstreamError::Api { errcode: 45009, .. }), false) =
                    (&e, key.kind.is_wecom())
                {
                    let until = next_quota_reset(now);
                    tracing::warn!(key = %k, until, "daily quota used up: no upstream calls for this key until the reset");
                    let _ = self.store.credentials.block_credential(k, lease, until, 45009).await;
                    return Refreshed::Done(Err(e.into_wafer(key)));
                }
                let remember = e.is_remembered();
                let error = e.into_wafer(key);
                if remember {
                    let now_ms = self.clock.now_ms();
                    let count = failed_before + 1;
                    let window = failures::window_ms(error.code, count);
                    self.failures.remember(k, &error, now_ms + window, now_ms);
                    let failed = FailedFetch {
                        until_ms: now_ms + window,
                        code: error.code.code(),
                        message: &error.message,
                        count,
                    };
                    if self.store.credentials.fail_credential(k, lease, &failed).await.is_err() {
                        let _ = self.store.credentials.release_lease(k, lease).await;
                    }
                    tracing::warn!(
                        key = %k, return_code = error.code.code(), detail = error.detail.as_deref().unwrap_or(""),
                        failures = count, retry_in_ms = window,
                        "upstream fetch failed; every caller gets this answer until the retry"
                    );
                } else {
                    let _ = self.store.credentials.release_lease(k, lease).await;
                }
                // A value that is still valid keeps being served whatever the refresh errors.
                return Refreshed::Done(usable_old.ok_or(error));
            }
        };
        let fetched_at = self.clock.now();
        let mut expires_at = fetched_at + fetched.expires_in;
        if a.row.value.as_deref() == Some(fetched.value.as_str()) && a.row.expires_at > 0 {
            // The same value again (WeCom hands out its current token with a fresh expires_in): it still expires
            // when it did, not two hours from now.
            expires_at = expires_at.min(a.row.expires_at);
        }
        let stored = self
            .store
            .credentials
            .put_credential(
                k,
                lease,
                &NewValue {
                    value: &fetched.value,
                    expires_at,
                    fetched_at,
                    window_start: hour_start(fetched_at),
                },
            )
            .await;
        match stored {
            Ok(true) => {}
            Ok(false) => {
                // Fenced out: whatever the new holder stores is the value (a classic token fetched here would
                // soon be invalidated by its fetch). Nothing of ours is kept.
                tracing::warn!(key = %k, "the lease was taken over during the refresh; adopting the stored value");
                crate::metrics::credential(CredEvent::Superseded);
                return Refreshed::Superseded;
            }
            Err(e) => {
                let _ = self.store.credentials.release_lease(k, lease).await;
                return Refreshed::Done(Err(self.store_err(key, e)));
            }
        }
        self.failures.clear(k);
        self.remember(k, &fetched.value, expires_at, fetched_at);
        tracing::info!(key = %k, expires_at, "credential refreshed upstream");
        crate::metrics::credential(CredEvent::Refresh);
        Refreshed::Done(Ok(Served { value: fetched.value, expires_at, fresh: true }))
    }

    /// Run `work` while renewing `lease` every third of its length, so a live holder keeps it however long the
    /// fetch takes, and a holder that dies or is frozen loses it within one lease length.
    async fn renewing<T>(&self, k: &str, lease: Lease<'_>, work: impl std::future::Future<Output = T>) -> T {
        let every = std::time::Duration::from_millis((self.policy.lease_ms / 3).max(20) as u64);
        let mut work = std::pin::pin!(work);
        let mut held = true;
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tokio::time::sleep(every), if held => {
                    let until = self.clock.now_ms() + self.policy.lease_ms;
                    match self.store.credentials.renew_lease(k, lease, until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // Taken over: the fetch goes on (it cannot be recalled), but its value will not be stored.
                            tracing::warn!(key = %k, "refresh lease lost while fetching");
                            held = false;
                        }
                        Err(e) => tracing::warn!(key = %k, error = %e, "could not renew the refresh lease"),
                    }
                }
            }
        }
    }
}
