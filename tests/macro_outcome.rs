//! `outcome` counts a `Result`-returning function's successes and failures
//! as `STAGE.ok` and `STAGE.err`, through early `return` and `?`, sync and
//! async; `panics` counts `STAGE.panic` when the body panics.

mod support;

use std::fmt::Display;
use std::num::ParseIntError;

use support::block_on;
use titus_count::counted;

fn count_of(stage: &str) -> u64 {
    titus_count::local_totals().get(stage).copied().unwrap_or(0)
}

fn counts(stage: &str) -> (u64, u64, u64) {
    (
        count_of(stage),
        count_of(&format!("{stage}.ok")),
        count_of(&format!("{stage}.err")),
    )
}

#[counted("outcome.sync", outcome)]
fn parse(raw: &str) -> Result<u32, ParseIntError> {
    if raw.is_empty() {
        return Ok(0);
    }
    let n: u32 = raw.trim().parse()?;
    Ok(n * 2)
}

#[test]
fn sync_results_with_early_return_and_question_mark() {
    assert_eq!(parse(""), Ok(0));
    assert_eq!(parse("21"), Ok(42));
    assert!(parse("x").is_err());
    assert!(parse("-1").is_err());
    assert_eq!(counts("outcome.sync"), (4, 2, 2));
}

#[derive(Debug)]
struct AppError;

impl From<ParseIntError> for AppError {
    fn from(_: ParseIntError) -> Self {
        AppError
    }
}

struct Parser {
    parsed: u32,
}

impl Parser {
    /// `?` converts the error through `From`: the closure must know the
    /// function's return type for that.
    #[counted("outcome.method", outcome)]
    fn feed(&mut self, raw: &str) -> Result<&mut Self, AppError> {
        self.parsed += raw.parse::<u32>()?;
        Ok(self)
    }

    #[counted("outcome.async", outcome)]
    async fn feed_async(&mut self, raw: &str) -> Result<u32, AppError> {
        if raw == "stop" {
            return Err(AppError);
        }
        self.parsed += raw.parse::<u32>()?;
        Ok(self.parsed)
    }
}

#[test]
fn methods_and_error_conversion() {
    let mut p = Parser { parsed: 0 };
    p.feed("1").unwrap().feed("2").unwrap();
    assert!(p.feed("x").is_err());
    assert_eq!(p.parsed, 3);
    assert_eq!(counts("outcome.method"), (3, 2, 1));
}

#[test]
fn async_results_with_early_return_and_question_mark() {
    let mut p = Parser { parsed: 0 };
    assert_eq!(block_on(p.feed_async("5")).unwrap(), 5);
    assert!(block_on(p.feed_async("stop")).is_err());
    assert!(block_on(p.feed_async("x")).is_err());
    assert_eq!(counts("outcome.async"), (3, 1, 2));
}

#[async_trait::async_trait]
trait Store {
    async fn put(&self, key: &str) -> Result<usize, String>;
}

struct Memory;

#[async_trait::async_trait]
impl Store for Memory {
    #[counted("outcome.async_trait", outcome)]
    async fn put(&self, key: &str) -> Result<usize, String> {
        if key.is_empty() {
            return Err("empty key".to_owned());
        }
        Ok(key.len())
    }
}

#[test]
fn async_trait_results() {
    assert_eq!(block_on(Memory.put("abc")), Ok(3));
    assert!(block_on(Memory.put("")).is_err());
    assert_eq!(counts("outcome.async_trait"), (2, 1, 1));
}

type IoResult<T> = std::io::Result<T>;

#[counted("outcome.alias", outcome)]
fn through_alias(fail: bool) -> IoResult<()> {
    if fail {
        Err(std::io::Error::other("failed"))
    } else {
        Ok(())
    }
}

#[counted("outcome.impl_trait", outcome)]
fn impl_trait_ok(x: u8) -> Result<impl Display, String> {
    if x == 0 {
        Err("zero".to_owned())
    } else {
        Ok(x)
    }
}

#[counted("outcome.generic", outcome)]
fn generic<T: std::str::FromStr>(raw: &str) -> Result<T, T::Err> {
    raw.parse()
}

#[test]
fn aliases_impl_trait_and_generics() {
    through_alias(false).unwrap();
    through_alias(true).unwrap_err();
    assert_eq!(counts("outcome.alias"), (2, 1, 1));
    assert_eq!(impl_trait_ok(3).unwrap().to_string(), "3");
    assert!(impl_trait_ok(0).is_err());
    assert_eq!(counts("outcome.impl_trait"), (2, 1, 1));
    assert_eq!(generic::<u8>("7"), Ok(7));
    assert!(generic::<u8>("300").is_err());
    assert!(generic::<f64>("1.5").is_ok());
    assert_eq!(counts("outcome.generic"), (3, 2, 1));
}

#[counted("outcome.panics", outcome, panics)]
fn may_panic(x: u32) -> Result<u32, String> {
    if x == 0 {
        panic!("zero");
    }
    Ok(x)
}

#[counted("outcome.async_panics", panics)]
async fn may_panic_async(x: u32) -> u32 {
    assert!(x != 0, "zero");
    x
}

#[test]
fn panics_are_counted_as_entered_and_as_panics() {
    assert_eq!(may_panic(1), Ok(1));
    assert!(std::panic::catch_unwind(|| may_panic(0)).is_err());
    assert_eq!(counts("outcome.panics"), (2, 1, 0));
    assert_eq!(count_of("outcome.panics.panic"), 1);

    assert_eq!(block_on(may_panic_async(2)), 2);
    assert!(std::panic::catch_unwind(|| block_on(may_panic_async(0))).is_err());
    assert_eq!(count_of("outcome.async_panics"), 2);
    assert_eq!(count_of("outcome.async_panics.panic"), 1);
}

#[counted("outcome.rollback", panics)]
fn rollback() {}

/// Rolls back when dropped, as a transaction guard does, also while a panic
/// unwinds past it.
struct Transaction;

impl Drop for Transaction {
    fn drop(&mut self) {
        rollback();
    }
}

#[test]
fn a_call_made_while_another_panic_unwinds_is_not_a_panic() {
    let unwound = std::panic::catch_unwind(|| {
        let _tx = Transaction;
        panic!("the handler failed");
    });
    assert!(unwound.is_err());
    // `rollback` ran during the unwinding and returned normally.
    assert_eq!(count_of("outcome.rollback"), 1);
    assert_eq!(count_of("outcome.rollback.panic"), 0);
}

/// Returns `Pending` until it is polled a second time.
struct Yield(bool);

impl std::future::Future for Yield {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

#[counted("outcome.async_dropped", panics)]
async fn waits() {
    Yield(false).await;
}

#[counted("outcome.boxed_panics", panics)]
fn boxed(x: u32) -> std::pin::Pin<Box<dyn std::future::Future<Output = u32>>> {
    Box::pin(async move {
        Yield(false).await;
        assert!(x != 0, "zero");
        x
    })
}

#[test]
fn a_future_dropped_during_another_panic_is_not_a_panic() {
    let unwound = std::panic::catch_unwind(|| {
        // Started and suspended, then dropped unfinished by the unwinding
        // of a panic elsewhere, as a sibling of a failing `join!` is.
        let mut future = Box::pin(waits());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(future.as_mut().poll(&mut cx).is_pending());
        panic!("a sibling failed");
    });
    assert!(unwound.is_err());
    assert_eq!(count_of("outcome.async_dropped"), 1);
    assert_eq!(count_of("outcome.async_dropped.panic"), 0);

    // A panic inside a later poll of a returned future is the future's own.
    assert_eq!(block_on(boxed(3)), 3);
    assert!(std::panic::catch_unwind(|| block_on(boxed(0))).is_err());
    assert_eq!(count_of("outcome.boxed_panics"), 2);
    assert_eq!(count_of("outcome.boxed_panics.panic"), 1);
}

#[test]
fn outcome_counts_reach_redis() {
    if support::is_child("outcome_counts_reach_redis") {
        let _guard = titus_count::init();
        for raw in ["1", "2", "x", ""] {
            let _ = parse(raw);
        }
        titus_count::flush().expect("flush");
        return;
    }
    let redis = support::RedisServer::start();
    support::run_child_ok(
        "outcome_counts_reach_redis",
        &[
            ("TITUS_COUNT_REDIS_URL", &redis.url()),
            ("TITUS_COUNT_NAMESPACE", "outcome"),
        ],
    );
    let totals = redis.totals("outcome");
    assert_eq!(totals["outcome.sync"], 4);
    assert_eq!(totals["outcome.sync.ok"], 3);
    assert_eq!(totals["outcome.sync.err"], 1);
}

/// With `impl Trait` in the return type, the rest of it still guides
/// inference: `return Err(Box::new(..))` and `?` convert into the declared
/// error type, as they do without the attribute.
#[counted("outcome.impl_boxed_error", outcome)]
fn impl_trait_with_boxed_error(fail: bool) -> Result<impl Display, Box<dyn std::error::Error>> {
    if fail {
        return Err(Box::new(std::io::Error::other("failed")));
    }
    let n: u32 = "7".parse()?;
    Ok(n)
}

#[test]
fn impl_trait_keeps_the_error_type_for_inference() {
    assert_eq!(impl_trait_with_boxed_error(false).unwrap().to_string(), "7");
    assert!(impl_trait_with_boxed_error(true).is_err());
    assert_eq!(counts("outcome.impl_boxed_error"), (2, 1, 1));
}

type Task = std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>>;

/// A function that returns a `Result` holding a future is counted by that
/// `Result`: the future inside is not the function's outcome.
#[counted("outcome.result_of_future", outcome)]
fn submit(
    accept: bool,
) -> Result<std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>>, String> {
    if !accept {
        return Err("queue full".to_owned());
    }
    Ok(Box::pin(async { 5 }))
}

/// The `futures` crate's `FutureExt::boxed`, for the test.
trait Boxed: std::future::Future + Send + Sized + 'static {
    fn boxed(self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send>> {
        Box::pin(self)
    }
}
impl<F: std::future::Future + Send + 'static> Boxed for F {}

/// `async { .. }.boxed()` as the tail: the future is watched, so a panic
/// inside it is counted.
#[counted("outcome.boxed_tail", panics)]
fn boxed_tail(fail: bool) -> Task {
    async move {
        assert!(!fail, "failed inside the future");
        3
    }
    .boxed()
}

#[test]
fn futures_in_results_and_boxed_tails() {
    assert_eq!(block_on(submit(true).unwrap()), 5);
    assert!(submit(false).is_err());
    assert_eq!(counts("outcome.result_of_future"), (2, 1, 1));

    assert_eq!(block_on(boxed_tail(false)), 3);
    let future = boxed_tail(true);
    // Counted at the call, before the future runs.
    assert_eq!(count_of("outcome.boxed_tail"), 2);
    assert_eq!(count_of("outcome.boxed_tail.panic"), 0);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| block_on(future)));
    assert!(caught.is_err());
    assert_eq!(count_of("outcome.boxed_tail.panic"), 1);
}
