//! `rediss://` with certificates made at test time: a good server, a server
//! whose certificate comes from another CA, a wrong password, mutual TLS,
//! and bad TLS settings. Needs the `tls` feature.

#![cfg(feature = "tls")]

mod support;

use std::time::Duration;

use support::{RedisServer, TestCerts, is_child, run_child, run_child_ok};
use titus_count::{Config, InitError};

/// The child: count, try to flush, print the outcome and the health.
fn child() {
    support::log_to_stderr();
    let mut config = Config::from_env();
    if std::env::var("TEST_ACCEPT_INVALID_CERTIFICATES").is_ok() {
        config = config.dangerously_accept_invalid_tls_certificates();
    }
    let _guard = config
        .io_timeout(Duration::from_millis(500))
        .shutdown_timeout(Duration::from_millis(500))
        .init()
        .expect("init");
    titus_count::count!("tls.messages", 21);
    let result = titus_count::flush_timeout(Duration::from_secs(3));
    let health = titus_count::health().unwrap();
    println!("\nflush={}", if result.is_ok() { "ok" } else { "failed" });
    println!("pending={}", health.pending_counts);
    println!("error={}", health.last_error.unwrap_or_default());
    println!("permanent={}", health.last_error_permanent);
}

fn field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {stdout}"))
}

fn totals_over_tls(certs: &TestCerts, redis: &RedisServer, client: bool) -> String {
    let (ca, cert, key) = (
        certs.path("ca.pem"),
        certs.path("client.pem"),
        certs.path("client.key"),
    );
    let mut envs = vec![("TITUS_COUNT_TLS_CA", ca.as_str())];
    if client {
        envs.push(("TITUS_COUNT_TLS_CERT", cert.as_str()));
        envs.push(("TITUS_COUNT_TLS_KEY", key.as_str()));
    }
    support::titus_count_ok(&redis.tls_url(), "titus", &["totals", "--json"], &envs)
}

#[test]
fn tls_child() {
    if is_child("tls_child") {
        child();
    }
}

#[test]
fn a_good_server_with_a_private_ca() {
    let certs = TestCerts::generate();
    let redis = RedisServer::start_tls(&certs, "server", "no", &[]);
    let output = run_child_ok(
        "tls_child",
        &[
            ("TITUS_COUNT_REDIS_URL", &redis.tls_url()),
            ("TITUS_COUNT_TLS_CA", &certs.path("ca.pem")),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(field(&stdout, "flush"), "ok", "{stdout}");
    assert!(totals_over_tls(&certs, &redis, false).contains("\"tls.messages\":21"));
}

#[test]
fn a_certificate_from_another_ca_is_refused_and_counts_are_kept() {
    let certs = TestCerts::generate();
    let redis = RedisServer::start_tls(&certs, "rogue", "no", &[]);
    let output = run_child_ok(
        "tls_child",
        &[
            ("TITUS_COUNT_REDIS_URL", &redis.tls_url()),
            ("TITUS_COUNT_TLS_CA", &certs.path("ca.pem")),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(field(&stdout, "flush"), "failed", "{stdout}");
    assert_eq!(field(&stdout, "pending"), "21", "{stdout}");
    let error = field(&stdout, "error").to_lowercase();
    assert!(
        error.contains("certificate") || error.contains("unknownissuer"),
        "{error}"
    );
    // Trying again does not help until an operator fixes the certificates.
    assert_eq!(field(&stdout, "permanent"), "true", "{stdout}");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("[ERROR] titus-count: not delivered: stage `tls.messages`: 21"),
        "{log}"
    );
}

#[test]
fn a_wrong_password_is_refused_and_counts_are_kept() {
    let certs = TestCerts::generate();
    let redis = RedisServer::start_tls(&certs, "server", "no", &["--requirepass", "right-pw"]);
    let url = format!("rediss://:wrong-pw@127.0.0.1:{}", redis.port());
    let output = run_child_ok(
        "tls_child",
        &[
            ("TITUS_COUNT_REDIS_URL", &url),
            ("TITUS_COUNT_TLS_CA", &certs.path("ca.pem")),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(field(&stdout, "flush"), "failed", "{stdout}");
    assert_eq!(field(&stdout, "pending"), "21", "{stdout}");
    let error = field(&stdout, "error");
    assert!(
        error.to_lowercase().contains("pass") || error.contains("WRONGPASS"),
        "{error}"
    );
    assert_eq!(field(&stdout, "permanent"), "true", "{stdout}");
    let all = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        !all.contains("wrong-pw") && !all.contains("right-pw"),
        "{all}"
    );
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let certs = TestCerts::generate();
    let redis = RedisServer::start_tls(&certs, "server", "yes", &[]);
    let without = run_child(
        "tls_child",
        &[
            ("TITUS_COUNT_REDIS_URL", &redis.tls_url()),
            ("TITUS_COUNT_TLS_CA", &certs.path("ca.pem")),
        ],
    );
    let stdout = String::from_utf8_lossy(&without.stdout);
    assert_eq!(field(&stdout, "flush"), "failed", "{stdout}");
    assert_eq!(field(&stdout, "permanent"), "true", "{stdout}");
    let with = run_child_ok(
        "tls_child",
        &[
            ("TITUS_COUNT_REDIS_URL", &redis.tls_url()),
            ("TITUS_COUNT_TLS_CA", &certs.path("ca.pem")),
            ("TITUS_COUNT_TLS_CERT", &certs.path("client.pem")),
            ("TITUS_COUNT_TLS_KEY", &certs.path("client.key")),
        ],
    );
    assert_eq!(field(&String::from_utf8_lossy(&with.stdout), "flush"), "ok");
    assert!(totals_over_tls(&certs, &redis, true).contains("\"tls.messages\":21"));
}

#[test]
fn bad_tls_settings_are_errors_naming_the_setting() {
    let certs = TestCerts::generate();
    let tls = "rediss://127.0.0.1:6380";
    let err = |config: Config| match config.init() {
        Err(InitError::InvalidTls { setting, reason }) => format!("{setting}: {reason}"),
        other => panic!("expected a TLS error, got {other:?}"),
    };
    let missing = err(Config::default()
        .redis_url(tls)
        .tls_ca_file("/nonexistent/ca.pem"));
    assert!(
        missing.starts_with("tls_ca_file") && missing.contains("/nonexistent/ca.pem"),
        "{missing}"
    );
    let not_pem = std::env::temp_dir().join(format!("titus-not-pem-{}", std::process::id()));
    std::fs::write(&not_pem, "hello").unwrap();
    let garbage = err(Config::default().redis_url(tls).tls_ca_file(&not_pem));
    assert!(garbage.contains("not a PEM file"), "{garbage}");
    let _ = std::fs::remove_file(&not_pem);
    let plain = err(Config::default()
        .redis_url("redis://127.0.0.1:6379")
        .tls_ca_file(certs.path("ca.pem")));
    assert!(plain.contains("not `rediss://`"), "{plain}");
    let unreadable = err(Config::default()
        .redis_url(tls)
        .tls_client_cert(certs.path("client.pem"), "/nonexistent/client.key"));
    assert!(unreadable.starts_with("tls_client_cert"), "{unreadable}");
}

#[test]
fn tls_on_a_cluster() {
    let certs = TestCerts::generate();
    let cluster = support::RedisCluster::start_tls(&certs, 3);
    let url = cluster.tls_url();
    let output = run_child_ok(
        "tls_child",
        &[
            ("TITUS_COUNT_REDIS_URL", &url),
            ("TITUS_COUNT_NAMESPACE", "tls_cluster"),
            ("TITUS_COUNT_TLS_CA", &certs.path("ca.pem")),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(field(&stdout, "flush"), "ok", "{stdout}");
    let stdout = support::titus_count_ok(
        &url,
        "tls_cluster",
        &["totals", "--json"],
        &[("TITUS_COUNT_TLS_CA", &certs.path("ca.pem"))],
    );
    assert!(stdout.contains("\"tls.messages\":21"), "{stdout}");
}

#[test]
fn the_loudly_named_opt_out_accepts_any_certificate_and_says_so() {
    let certs = TestCerts::generate();
    let redis = RedisServer::start_tls(&certs, "rogue", "no", &[]);
    let output = run_child_ok(
        "tls_child",
        &[
            ("TITUS_COUNT_REDIS_URL", &redis.tls_url()),
            ("TEST_ACCEPT_INVALID_CERTIFICATES", "1"),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(field(&stdout, "flush"), "ok", "{stdout}");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("[WARN] titus-count: TLS certificate verification is OFF"),
        "{log}"
    );
}
