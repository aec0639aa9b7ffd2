//! Benchmarks' MySQL helper: a fresh database on the server of `WAFER_TEST_MYSQL_URL`, one per run.

/// Create a database with a random name on `server` (a `mysql://…` URL) and return its URL.
pub async fn fresh_database(server: &str) -> String {
    use mysql_async::prelude::Queryable;
    let name = format!("wafer_bench_{}", wafer_scf::crypto::random_hex(6).unwrap());
    let pool = mysql_async::Pool::new(server);
    pool.get_conn()
        .await
        .unwrap()
        .query_drop(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
        .await
        .unwrap();
    pool.disconnect().await.unwrap();
    let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(server);
    format!("{base}/{name}")
}
