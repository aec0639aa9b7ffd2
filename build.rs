//! Build script: marks test builds made with a MySQL URL (`WAFER_TEST_MYSQL_URL`), so that without one the MySQL
//! suite is reported as ignored rather than as passed.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(wafer_mysql_tests)");
    println!("cargo:rerun-if-env-changed=WAFER_TEST_MYSQL_URL");
    if std::env::var("WAFER_TEST_MYSQL_URL").is_ok_and(|u| !u.is_empty()) {
        println!("cargo:rustc-cfg=wafer_mysql_tests");
    }
}
