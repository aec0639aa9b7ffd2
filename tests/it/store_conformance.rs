//! The storage conformance suite: the same assertions against every backend.

use crate::both_backends;
use crate::helpers::id;
use crate::helpers::{app_record, Backend, TestDb, T0};
use wafer_scf::store::{SessionRecord, TokenMode};

fn session(id: &str, appid: &str, openid: &str, created: i64) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        skey_hash: wafer_scf::crypto::sha256_hex(id.as_bytes()),
        appid: appid.parse().unwrap(),
        openid: openid.into(),
        unionid: String::new(),
        session_key: format!("key-{id}"),
        user_info: None,
        created_at: created,
        last_visit_at: created,
    }
}

async fn apps_round_trip_and_replace(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.store().await;
    assert!(s.registry.list_apps().await.unwrap().is_empty());
    assert!(s.registry.get_app(&id("wx1")).await.unwrap().is_none());
    let mut a = app_record("wx1", "secret-1");
    s.registry.put_app(&a).await.unwrap();
    s.registry.put_app(&app_record("wx0", "secret-0")).await.unwrap();
    assert_eq!(s.registry.get_app(&id("wx1")).await.unwrap(), Some(a.clone()));
    a.secret = "secret-2".into();
    a.token_mode = TokenMode::Classic;
    a.session_duration_secs = 99;
    a.updated_at = T0 + 5;
    s.registry.put_app(&a).await.unwrap();
    assert_eq!(s.registry.get_app(&id("wx1")).await.unwrap(), Some(a.clone()));
    let ids: Vec<String> =
        s.registry.list_apps().await.unwrap().into_iter().map(|a| a.appid.into_string()).collect();
    assert_eq!(ids, ["wx0", "wx1"]);
    assert!(s.registry.remove_app(&id("wx1")).await.unwrap());
    assert!(!s.registry.remove_app(&id("wx1")).await.unwrap());
    assert_eq!(s.registry.list_apps().await.unwrap().len(), 1);
}

async fn appid_lookup_is_exact_and_case_sensitive(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.store().await;
    s.registry.put_app(&app_record("wxAbC", "x")).await.unwrap();
    assert!(s.registry.get_app(&id("wxabc")).await.unwrap().is_none());
    assert!(s.registry.get_app(&id("wxAbC")).await.unwrap().is_some());
}

async fn migrate_is_idempotent(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.store().await;
    s.registry.put_app(&app_record("wx1", "x")).await.unwrap();
    s.schema.migrate().await.unwrap();
    s.schema.migrate().await.unwrap();
    assert_eq!(s.registry.list_apps().await.unwrap().len(), 1, "data survives re-migration");
}

async fn sessions_are_bounded_rotated_and_joined_with_app_rules(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.store().await;
    s.registry.put_app(&app_record("wx1", "x")).await.unwrap();
    let o = s.sessions.create_session(&session("a", "wx1", "u1", T0), 3, T0).await.unwrap();
    assert!(!o.existing_user);
    for (i, id) in ["b", "c", "d"].iter().enumerate() {
        let o = s.sessions.create_session(&session(id, "wx1", "u1", T0 + 1 + i as i64), 3, T0).await.unwrap();
        assert!(o.existing_user);
    }
    assert!(s.sessions.get_session("a").await.unwrap().is_none(), "oldest pruned beyond 3");
    let d = s.sessions.get_session("d").await.unwrap().unwrap();
    assert_eq!(d.login_duration_secs, 30 * 86_400);
    assert_eq!(d.session_duration_secs, 2_592_000);
    let b_ = s.sessions.get_session("b").await.unwrap().unwrap();
    assert_eq!(
        b_.session.session_key, "key-d",
        "the newest session_key is given to the user's other sessions"
    );
    // Another user is untouched.
    s.sessions.create_session(&session("z", "wx1", "u2", T0), 3, T0).await.unwrap();
    assert_eq!(s.sessions.get_session("d").await.unwrap().unwrap().session.session_key, "key-d");
    assert_eq!(s.sessions.get_session("z").await.unwrap().unwrap().session.session_key, "key-z");
}

/// Logins in the same second: the new session is always the one kept, whatever the ids (a login must never hand
/// out a session it has just pruned).
async fn a_login_never_prunes_its_own_session(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.store().await;
    s.registry.put_app(&app_record("wx1", "x")).await.unwrap();
    // Ids sorting both ways around the existing one.
    for (i, sid) in ["m", "a", "z", "b", "y"].iter().enumerate() {
        s.sessions.create_session(&session(sid, "wx1", "u1", T0), 1, T0).await.unwrap();
        assert!(
            s.sessions.get_session(sid).await.unwrap().is_some(),
            "login {i} ({sid}) kept its own session"
        );
        assert_eq!(s.sessions.count_sessions(&id("wx1")).await.unwrap(), 1, "and only it");
    }
}

async fn expired_sessions_of_the_user_are_dropped_at_login_and_by_purge(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.store().await;
    let mut a = app_record("wx1", "x");
    a.session_duration_secs = 100;
    s.registry.put_app(&a).await.unwrap();
    s.sessions.create_session(&session("old", "wx1", "u1", T0), 5, T0).await.unwrap();
    s.sessions.create_session(&session("other", "wx1", "u2", T0), 5, T0).await.unwrap();
    s.sessions.create_session(&session("new", "wx1", "u1", T0 + 500), 5, T0 + 500).await.unwrap();
    assert!(
        s.sessions.get_session("old").await.unwrap().is_none(),
        "expired session of the same user dropped at login"
    );
    assert!(
        s.sessions.get_session("other").await.unwrap().is_some(),
        "other users' sessions wait for the purge"
    );
    assert_eq!(s.sessions.purge_expired_sessions(T0 + 500).await.unwrap(), 1);
    assert!(s.sessions.get_session("other").await.unwrap().is_none());
    assert!(s.sessions.get_session("new").await.unwrap().is_some());
}

async fn touch_only_moves_forward_and_user_info_round_trips_emoji(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.store().await;
    s.registry.put_app(&app_record("wx1", "x")).await.unwrap();
    s.sessions.create_session(&session("a", "wx1", "u1", T0), 5, T0).await.unwrap();
    s.sessions.create_session(&session("b", "wx1", "u1", T0), 5, T0).await.unwrap();
    s.sessions.touch_session("a", T0 + 100).await.unwrap();
    s.sessions.touch_session("a", T0 + 50).await.unwrap();
    assert_eq!(s.sessions.get_session("a").await.unwrap().unwrap().session.last_visit_at, T0 + 100);
    let info = r#"{"nickName":"王小明😀👨‍👩‍👧","city":"深圳"}"#;
    s.sessions.set_user_info(&id("wx1"), "u1", info).await.unwrap();
    assert_eq!(s.sessions.get_session("a").await.unwrap().unwrap().session.user_info.as_deref(), Some(info));
    assert_eq!(s.sessions.get_session("b").await.unwrap().unwrap().session.user_info.as_deref(), Some(info));
}

async fn removing_an_app_removes_its_sessions(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.store().await;
    s.registry.put_app(&app_record("wx1", "x")).await.unwrap();
    s.registry.put_app(&app_record("wx2", "x")).await.unwrap();
    s.sessions.create_session(&session("a", "wx1", "u1", T0), 5, T0).await.unwrap();
    s.sessions.create_session(&session("b", "wx2", "u1", T0), 5, T0).await.unwrap();
    s.registry.remove_app(&id("wx1")).await.unwrap();
    assert!(s.sessions.get_session("a").await.unwrap().is_none());
    assert!(s.sessions.get_session("b").await.unwrap().is_some());
}

async fn over_long_values_are_refused_not_truncated(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.store().await;
    s.registry.put_app(&app_record("wx1", "x")).await.unwrap();
    let mut long = session("a", "wx1", "u1", T0);
    long.openid = "o".repeat(129);
    let r = s.sessions.create_session(&long, 5, T0).await;
    match b {
        // MySQL in strict mode refuses; SQLite has no length limits and stores it whole.
        Backend::Mysql => assert!(r.is_err(), "strict mode must refuse, not truncate"),
        Backend::Sqlite => {
            assert_eq!(s.sessions.get_session("a").await.unwrap().unwrap().session.openid.len(), 129)
        }
    }
}

async fn concurrent_logins_of_one_user_respect_the_bound(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.store().await;
    s.registry.put_app(&app_record("wx1", "x")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.sessions.create_session(&session(&format!("s{i:02}"), "wx1", "u1", T0 + i), 5, T0 + 20).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut live = 0;
    for i in 0..20 {
        if s.sessions.get_session(&format!("s{i:02}")).await.unwrap().is_some() {
            live += 1;
        }
    }
    assert!((1..=5).contains(&live), "bound respected under concurrency: {live}");
}

both_backends!(
    a_login_never_prunes_its_own_session,
    apps_round_trip_and_replace,
    appid_lookup_is_exact_and_case_sensitive,
    migrate_is_idempotent,
    sessions_are_bounded_rotated_and_joined_with_app_rules,
    expired_sessions_of_the_user_are_dropped_at_login_and_by_purge,
    touch_only_moves_forward_and_user_info_round_trips_emoji,
    removing_an_app_removes_its_sessions,
    over_long_values_are_refused_not_truncated,
    concurrent_logins_of_one_user_respect_the_bound,
);

/// `require_ssl=true` is honoured: a MySQL server without TLS is refused, never used in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(wafer_mysql_tests), ignore = "MySQL suite off: set WAFER_TEST_MYSQL_URL")]
async fn mysql_tls_when_required_is_never_downgraded() {
    let Some(server) = crate::helpers::mysql_server_url() else { return };
    let db = crate::helpers::TestDb::new(Backend::Mysql).await;
    // This machine's MariaDB has TLS disabled: asking for it must fail, clearly.
    let sep = if db.url.contains('?') { '&' } else { '?' };
    let url = wafer_scf::store::DatabaseUrl::parse(&format!("{}{sep}require_ssl=true", db.url)).unwrap();
    let opts = wafer_scf::store::StoreOptions {
        query_timeout: std::time::Duration::from_secs(3),
        ..Default::default()
    };
    let store = wafer_scf::store::open_raw(&url, &opts).await.unwrap();
    let e = store.schema.schema_status().await.expect_err("a server without TLS must be refused");
    let text = e.to_string().to_ascii_lowercase();
    assert!(text.contains("ssl") || text.contains("tls"), "{e}");
    // And the same database without the parameter works (the refusal was about TLS, nothing else).
    let plain = wafer_scf::store::open_raw(&wafer_scf::store::DatabaseUrl::parse(&db.url).unwrap(), &opts)
        .await
        .unwrap();
    assert!(plain.schema.schema_status().await.is_ok());
    let _ = server;
}
