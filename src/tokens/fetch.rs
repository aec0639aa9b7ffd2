//! The upstream side of a refresh: one fetch of a token or ticket from WeChat / WeCom inside the caller's budget
//! (with retries on "system busy"), tickets fetched with their token (refreshed once, compare-then-refresh, when
//! WeChat rejects it), and how a failed fetch reads to callers.

use super::{Attempt, CredKey, CredKind, Credentials, Force};
use crate::envelope::{ReturnCode, WaferError};
use crate::store::TokenMode;
use crate::wechat::{Call, Fetched, Upstream, UpstreamError, TOKEN_INVALID_CODES};
use std::time::Duration;

impl Credentials {
    /// One upstream fetch for `key`, with retries on "system busy" while the caller's budget allows.
    pub(super) async fn fetch(&self, key: &CredKey, a: &Attempt<'_>) -> Result<Fetched, FetchError> {
        let deadline = a.deadline;
        let mut delay = self.policy.busy_backoff_ms;
        let mut attempt = 1;
        loop {
            let result =
                match tokio::time::timeout_at(deadline, self.fetch_once(key, a.forced_against, deadline))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(FetchError::Upstream(UpstreamError::Network("deadline exceeded".into()))),
                };
            match result {
                Err(FetchError::Upstream(UpstreamError::Api { errcode: -1, .. }))
                    if attempt < self.policy.busy_attempts
                        && tokio::time::Instant::now() + Duration::from_millis(delay) < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn fetch_once(
        &self,
        key: &CredKey,
        forced_against: Option<&str>,
        deadline: tokio::time::Instant,
    ) -> Result<Fetched, FetchError> {
        match key.kind {
            CredKind::MpToken => {
                let appid = key.owner().app().ok_or(FetchError::NotConfigured)?;
                let app = self
                    .store
                    .registry
                    .get_app(appid)
                    .await
                    .map_err(FetchError::Store)?
                    .ok_or(FetchError::NotConfigured)?;
                let w = &self.wechat;
                match (app.token_mode, forced_against) {
                    (TokenMode::Stable, None) => w.stable_token(&app.appid, &app.secret, false).await,
                    (TokenMode::Stable, Some(bad)) => {
                        // As WeChat documents it: normal mode first; force_refresh (which invalidates the old
                        // token at once, 20 a day) only when normal mode hands back the very token that failed.
                        let normal = w
                            .stable_token(&app.appid, &app.secret, false)
                            .await
                            .map_err(FetchError::Upstream)?;
                        if normal.value != bad {
                            return Ok(normal);
                        }
                        self.spend_force(key).await?;
                        w.stable_token(&app.appid, &app.secret, true).await
                    }
                    (TokenMode::Classic, forced) => {
                        if forced.is_some() {
                            self.spend_force(key).await?;
                        }
                        match w.classic_token(&app.appid, &app.secret).await {
                            // cgi-bin/token's daily quota is spent and WeChat points to stable_token, whose quota
                            // is separate: take the token from there.
                            Err(UpstreamError::Api { errcode: 45009, suggests_stable: true, .. }) => {
                                tracing::warn!(key = %key, "classic token quota used up; fetching a stable token instead");
                                w.stable_token(&app.appid, &app.secret, false).await
                            }
                            other => other,
                        }
                    }
                }
                .map_err(FetchError::Upstream)
            }
            CredKind::WcToken => {
                let (corpid, agentid) = key.owner().agent().ok_or(FetchError::NotConfigured)?;
                let agent = self
                    .store
                    .registry
                    .get_agent(corpid, agentid)
                    .await
                    .map_err(FetchError::Store)?
                    .ok_or(FetchError::NotConfigured)?;
                self.wecom.gettoken(&agent.corpid, &agent.secret).await.map_err(FetchError::Upstream)
            }
            CredKind::MpJsapiTicket | CredKind::WcCorpTicket | CredKind::WcAgentTicket => {
                let token_key = key.token_key();
                let token =
                    self.get_until(&token_key, Force::No, deadline).await.map_err(FetchError::Token)?;
                match self.ticket_call(key.kind, &token.value).await {
                    Err(UpstreamError::Api { errcode, .. }) if TOKEN_INVALID_CODES.contains(&errcode) => {
                        // Compare-then-expire: refresh the token only if it is still the one that failed; retry once.
                        tracing::info!(key = %key, errcode, "ticket fetch rejected the token; refreshing it once");
                        let token = self
                            .get_until(&token_key, Force::Rejected(&token.value), deadline)
                            .await
                            .map_err(FetchError::Token)?;
                        self.ticket_call(key.kind, &token.value).await.map_err(FetchError::Upstream)
                    }
                    other => other.map_err(FetchError::Upstream),
                }
            }
        }
    }

    /// One forced refresh from the app's daily budget, or [`FetchError::ForceBudget`].
    async fn spend_force(&self, key: &CredKey) -> Result<(), FetchError> {
        let now = self.clock.now();
        let budget = crate::store::ForceBudget {
            day: super::next_quota_reset(now) - 86_400,
            per_day: self.policy.force_per_day,
            hour: now - now.rem_euclid(3600),
            per_hour: self.policy.force_per_hour,
        };
        match self.store.credentials.take_force_budget(&key.to_string(), &budget).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(FetchError::ForceBudget(self.policy.force_per_day, self.policy.force_per_hour)),
            Err(e) => Err(FetchError::Store(e)),
        }
    }

    async fn ticket_call(&self, kind: CredKind, token: &str) -> Result<Fetched, UpstreamError> {
        match kind {
            CredKind::MpJsapiTicket => self.wechat.jsapi_ticket(token).await,
            CredKind::WcCorpTicket => self.wecom.corp_ticket(token).await,
            _ => self.wecom.agent_ticket(token).await,
        }
    }
}

pub(super) enum FetchError {
    Upstream(UpstreamError),
    Store(crate::store::StoreError),
    Token(WaferError),
    NotConfigured,
    /// The day's or the hour's forced refreshes are spent (the budgets per day and per hour).
    ForceBudget(i64, i64),
}

impl FetchError {
    /// Upstream failures are remembered; storage failures, unknown apps and a ticket's token failure (remembered
    /// under the token's own key) are not.
    pub(super) fn is_remembered(&self) -> bool {
        matches!(self, Self::Upstream(_) | Self::ForceBudget(..))
    }

    pub(super) fn into_wafer(self, key: &CredKey) -> WaferError {
        let upstream = if key.kind.is_wecom() { Upstream::WeCom } else { Upstream::WeChat };
        match self {
            Self::Upstream(e) => {
                let call = if key.kind.is_ticket() { Call::Ticket } else { Call::Token };
                e.to_wafer(call, upstream)
            }
            Self::Store(e) => WaferError::db(e),
            Self::Token(e) => e,
            Self::ForceBudget(day, hour) => WaferError::new(
                ReturnCode::ForceRefreshLimited,
                format!(
                    "this app's forced token refreshes are spent ({day} a day, {hour} an hour); the current token is \
                     served until it expires (WAFER_FORCE_REFRESH_PER_DAY / _PER_HOUR, within WeChat's limits)"
                ),
            ),
            Self::NotConfigured => {
                WaferError::new(ReturnCode::NoAppid, "this app or agent is not configured on this server")
            }
        }
    }
}
