//! What to do with a credential, decided from its stored row alone: a pure function of (row, what the caller said,
//! now, policy), unit-tested without storage or network. [`Credentials::get`](super::Credentials::get) reads the
//! row, asks [`decide`], and carries the step out.

use super::{hour_start, quota_error, shared_error, stale_at, Force, Policy, Served};
use crate::envelope::{ReturnCode, WaferError};
use crate::store::CredentialRow;

/// The next step for one caller, given the stored row.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// The stored value will do: serve it (and keep it in memory).
    Current(Served),
    /// Answer now without fetching: a still-usable value, or why there is none (quota, ticket budget).
    Answer(Result<Served, WaferError>),
    /// Another instance's fetch failed a moment ago: remember that here until `until_ms`, and answer with a
    /// still-usable value or its error.
    Shared { error: WaferError, until_ms: i64, usable_old: Option<Served> },
    /// A fetch is due: take the lease and refresh. `usable_old` is served while another instance holds the lease
    /// or if the fetch fails; `forced_against` is the value the caller found bad (a refresh asked for although the
    /// value is not due).
    Fetch { forced_against: Option<String>, usable_old: Option<Served> },
}

/// Decide what a caller who said `force` gets from `row` at `now` (Unix s; `now_ms` in ms). `cooled`: a named
/// force honours the cooldown after the last fetch (an upstream rejection does not).
pub(crate) fn decide(
    row: &CredentialRow,
    force: Force<'_>,
    cooled: bool,
    is_ticket: bool,
    now: i64,
    now_ms: i64,
    policy: &Policy,
) -> Step {
    let current = row.value.as_deref().filter(|_| now < row.expires_at);
    let served = |v: &str| Served { value: v.to_owned(), expires_at: row.expires_at, fresh: false };
    let stale = now >= stale_at(row.expires_at, row.fetched_at, policy.margin_secs);
    let since_fetch = now - row.fetched_at;
    let need = match (force, current) {
        (_, None) => true,
        (Force::No, Some(_)) => stale,
        (Force::Yes(Some(seen)), Some(cur)) => {
            stale || (cur == seen && (!cooled || since_fetch >= policy.force_min_interval_secs))
        }
        (Force::Yes(None), Some(_)) => stale || since_fetch >= policy.force_cooldown_secs,
        (Force::Rejected(seen), Some(cur)) => stale || cur == seen,
    };
    if let (false, Some(v)) = (need, current) {
        return Step::Current(served(v));
    }
    // A usable old value may be served while nobody may (or should) refresh: never the one the caller found bad.
    let usable_old = current
        .filter(|cur| match force {
            Force::No => true,
            Force::Yes(Some(seen)) | Force::Rejected(seen) => cur != &seen,
            Force::Yes(None) => false,
        })
        .map(served);
    if row.failed_until_ms > now_ms {
        return Step::Shared { error: shared_error(row), until_ms: row.failed_until_ms, usable_old };
    }
    // Quota and budget refusals: any unexpired value beats none, even the one the caller found bad.
    let any = usable_old.clone().or_else(|| current.map(served));
    if row.blocked_until > now {
        return Step::Answer(any.ok_or_else(|| quota_error(row.blocked_code, row.blocked_until)));
    }
    if is_ticket && row.window_start == hour_start(now) && row.window_count >= policy.ticket_budget_per_hour {
        return Step::Answer(any.ok_or_else(|| {
            WaferError::new(
                ReturnCode::WeixinRateLimited,
                format!("ticket budget of {}/hour used up for this app", policy.ticket_budget_per_hour),
            )
        }));
    }
    let forced_against = match force {
        Force::Yes(Some(seen)) if !stale => Some(seen.to_owned()),
        Force::Yes(None) if !stale => current.map(str::to_owned),
        _ => None,
    };
    Step::Fetch { forced_against, usable_old }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;

    fn row(value: &str, fetched_ago: i64, lifetime: i64) -> CredentialRow {
        CredentialRow {
            key: "mp:token:wx1".into(),
            value: Some(value.into()),
            fetched_at: NOW - fetched_ago,
            expires_at: NOW - fetched_ago + lifetime,
            ..CredentialRow::default()
        }
    }

    fn step(r: &CredentialRow, force: Force<'_>) -> Step {
        decide(r, force, true, false, NOW, NOW * 1000, &Policy::default())
    }

    fn old(v: &str, r: &CredentialRow) -> Option<Served> {
        Some(Served { value: v.into(), expires_at: r.expires_at, fresh: false })
    }

    #[test]
    fn a_fresh_value_is_served_and_a_missing_or_stale_one_fetched() {
        let r = row("T1", 100, 7200);
        assert_eq!(step(&r, Force::No), Step::Current(old("T1", &r).unwrap()));
        let none = CredentialRow::default();
        assert_eq!(step(&none, Force::No), Step::Fetch { forced_against: None, usable_old: None });
        // Inside the refresh margin: fetch, serving the old value meanwhile.
        let due = row("T1", 7000, 7200);
        assert_eq!(step(&due, Force::No), Step::Fetch { forced_against: None, usable_old: old("T1", &due) });
        let expired = row("T1", 8000, 7200);
        assert_eq!(step(&expired, Force::No), Step::Fetch { forced_against: None, usable_old: None });
    }

    #[test]
    fn force_is_compare_then_expire_with_a_cooldown() {
        let r = row("T1", 100, 7200);
        // Naming the current value: refresh, never serving that value as the fallback.
        let named = Step::Fetch { forced_against: Some("T1".into()), usable_old: None };
        assert_eq!(step(&r, Force::Yes(Some("T1"))), named);
        // Naming an older value: the current one is the answer.
        assert_eq!(step(&r, Force::Yes(Some("T0"))), Step::Current(old("T1", &r).unwrap()));
        // Within the minimum interval after a fetch, a named force is not honoured…
        let young = row("T1", 2, 7200);
        assert_eq!(step(&young, Force::Yes(Some("T1"))), Step::Current(old("T1", &young).unwrap()));
        // …unless WeChat itself rejected the value.
        let rejected =
            decide(&young, Force::Rejected("T1"), false, false, NOW, NOW * 1000, &Policy::default());
        assert_eq!(rejected, Step::Fetch { forced_against: None, usable_old: None });
        // An anonymous force waits for the cooldown.
        assert_eq!(step(&young, Force::Yes(None)), Step::Current(old("T1", &young).unwrap()));
        assert!(matches!(
            step(&r, Force::Yes(None)),
            Step::Fetch { forced_against: Some(_), usable_old: None }
        ));
    }

    #[test]
    fn failures_quotas_and_budgets_answer_without_fetching() {
        let mut r = row("T1", 7000, 7200);
        r.failed_until_ms = NOW * 1000 + 500;
        r.failed_code = 40164;
        r.failed_message = "whitelist".into();
        match step(&r, Force::No) {
            Step::Shared { error, until_ms, usable_old } => {
                assert_eq!(error.code, ReturnCode::WeixinIpNotAllowed);
                assert_eq!(until_ms, r.failed_until_ms);
                assert_eq!(usable_old, old("T1", &r));
            }
            other => panic!("{other:?}"),
        }
        let mut blocked =
            CredentialRow { blocked_until: NOW + 60, blocked_code: 45009, ..CredentialRow::default() };
        assert!(
            matches!(step(&blocked, Force::No), Step::Answer(Err(e)) if e.code == ReturnCode::WeixinQuotaErr)
        );
        blocked.value = Some("T1".into());
        blocked.expires_at = NOW + 10;
        // Even the value the caller found bad beats a quota refusal.
        assert!(matches!(step(&blocked, Force::Yes(Some("T1"))), Step::Answer(Ok(s)) if s.value == "T1"));
        let spent =
            CredentialRow { window_start: hour_start(NOW), window_count: 100, ..CredentialRow::default() };
        let ticket = decide(&spent, Force::No, true, true, NOW, NOW * 1000, &Policy::default());
        assert!(matches!(ticket, Step::Answer(Err(e)) if e.code == ReturnCode::WeixinRateLimited));
    }
}
