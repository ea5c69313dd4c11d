//! Bad configuration is a clear error from `init`; an unreachable Redis is
//! not an error but a wait, with the counts kept.

mod support;

use std::time::Duration;

use support::{RedisServer, closed_port, is_child, run_child, run_child_ok};
use titus_count::{Config, InitError};

#[test]
fn a_malformed_url_is_an_error_without_the_password() {
    let err = Config::default()
        .redis_url("redis://:hunter2@127.0.0.1:notaport")
        .init()
        .expect_err("a malformed URL is refused");
    assert!(matches!(err, InitError::InvalidRedisUrl { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("redis_url"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!format!("{err:?}").contains("hunter2"));

    // A password holding `#`, `/` or `?` cuts the URL short, so it does not
    // parse: the error still hides the password.
    for password in ["hunt#er2", "hunt/er2", "hunt?er2"] {
        let err = Config::default()
            .redis_url(format!("redis://user:{password}@127.0.0.1:6379"))
            .init()
            .expect_err("a URL cut short by the password is refused");
        let text = format!("{err} {err:?}");
        assert!(matches!(err, InitError::InvalidRedisUrl { .. }), "{text}");
        assert!(!text.contains(password), "{text}");
        assert!(!text.contains("er2"), "{text}");
    }

    let err = Config::default()
        .redis_url("http://127.0.0.1")
        .init()
        .expect_err("error");
    assert!(matches!(err, InitError::InvalidRedisUrl { .. }), "{err:?}");
}

#[test]
fn a_malformed_node_list_is_an_error() {
    for (url, needle) in [
        (
            "redis://127.0.0.1:7001,,redis://127.0.0.1:7002",
            "empty node",
        ),
        (
            "redis://127.0.0.1:7001,127.0.0.1:7002",
            "is not a valid Redis URL",
        ),
        (
            "redis://:pw1@127.0.0.1:7001,rediss://:pw2@127.0.0.1:7002",
            "TLS",
        ),
    ] {
        let err = Config::default().redis_url(url).init().expect_err(url);
        let text = err.to_string();
        assert!(matches!(err, InitError::InvalidRedisUrl { .. }), "{err:?}");
        assert!(
            text.contains(needle) && text.contains("redis_url"),
            "{url}: {text}"
        );
        assert!(!text.contains("pw1") && !text.contains("pw2"), "{text}");
    }
}

#[test]
fn a_malformed_setting_is_an_error() {
    let err = Config::default().namespace("").init().expect_err("error");
    assert!(matches!(err, InitError::InvalidNamespace { .. }), "{err:?}");
    let err = Config::default()
        .namespace("a}b")
        .init()
        .expect_err("error");
    assert!(matches!(err, InitError::InvalidNamespace { .. }), "{err:?}");
    let err = Config::default()
        .interval(Duration::ZERO)
        .init()
        .expect_err("error");
    assert!(
        matches!(
            err,
            InitError::InvalidDuration {
                setting: "interval",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_malformed_interval_in_the_environment_panics_init_clearly() {
    if is_child("a_malformed_interval_in_the_environment_panics_init_clearly") {
        // The error-returning form names the variable and the accepted form.
        let err = Config::from_env().init().expect_err("error");
        let text = err.to_string();
        assert!(text.contains("TITUS_COUNT_INTERVAL"), "{text}");
        assert!(text.contains("`5 parsecs`"), "{text}");
        assert!(text.contains("500ms"), "{text}");
        // `init()` panics with the same message.
        let _guard = titus_count::init();
        unreachable!("init accepted a malformed interval");
    }
    let output = run_child(
        "a_malformed_interval_in_the_environment_panics_init_clearly",
        &[("TITUS_COUNT_INTERVAL", "5 parsecs")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("titus-count: invalid TITUS_COUNT_INTERVAL `5 parsecs`"),
        "{stderr}"
    );
}

#[test]
fn a_malformed_history_retention_in_the_environment_is_an_error() {
    if is_child("a_malformed_history_retention_in_the_environment_is_an_error") {
        let err = Config::from_env().init().expect_err("error");
        assert!(
            matches!(
                err,
                InitError::InvalidDuration {
                    setting: "TITUS_COUNT_HISTORY_RETENTION",
                    ..
                }
            ),
            "{err:?}"
        );
        return;
    }
    run_child_ok(
        "a_malformed_history_retention_in_the_environment_is_an_error",
        &[("TITUS_COUNT_HISTORY_RETENTION", "a while")],
    );
}

#[test]
fn a_second_init_is_an_error() {
    if is_child("a_second_init_is_an_error") {
        let _guard = Config::from_env().init().expect("first init");
        let second = Config::from_env().init();
        assert!(matches!(second, Err(InitError::AlreadyInitialized)));
        return;
    }
    let redis = RedisServer::start();
    run_child_ok(
        "a_second_init_is_an_error",
        &[("TITUS_COUNT_REDIS_URL", &redis.url())],
    );
}

#[test]
fn an_unreachable_redis_is_a_wait_not_an_error() {
    if is_child("an_unreachable_redis_is_a_wait_not_an_error") {
        support::log_to_stderr();
        let guard = Config::from_env()
            .interval(Duration::from_millis(10))
            .shutdown_timeout(Duration::from_millis(300))
            .io_timeout(Duration::from_millis(100))
            .init()
            .expect("init succeeds although Redis is down");
        titus_count::count!("waiting", 9);
        let err = titus_count::flush_timeout(Duration::from_millis(200)).unwrap_err();
        assert!(
            matches!(err, titus_count::FlushError::Timeout { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("kept"), "{err}");
        assert_eq!(titus_count::local_totals()["waiting"], 9);
        drop(guard);
        // The exit hook waits out the shutdown timeout, then logs what it
        // could not deliver.
        return;
    }
    let url = format!("redis://:hunter2@127.0.0.1:{}", closed_port());
    let output = run_child_ok(
        "an_unreachable_redis_is_a_wait_not_an_error",
        &[("TITUS_COUNT_REDIS_URL", &url)],
    );
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("[ERROR]"), "{log}");
    assert!(log.contains("stage `waiting`: 9"), "{log}");
    assert!(!log.contains("hunter2"), "{log}");
}
