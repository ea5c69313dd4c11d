//! `#[counted]` on asynchronous code: `async fn` (free, methods, in traits)
//! is counted when its body first runs; `#[async_trait]` methods and sync
//! functions returning futures are counted once per call, not per poll.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use support::block_on;
use titus_count::counted;

fn count_of(stage: &str) -> u64 {
    titus_count::local_totals().get(stage).copied().unwrap_or(0)
}

/// Returns `Pending` once, so a future awaiting it is polled twice.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

#[counted("async.free")]
async fn free(x: u32) -> u32 {
    YieldOnce(false).await;
    YieldOnce(false).await;
    x + 1
}

#[test]
fn async_fn_counts_when_the_body_first_runs_and_once_per_call() {
    let future = free(1);
    assert_eq!(count_of("async.free"), 0, "not counted before it runs");
    assert_eq!(block_on(future), 2);
    assert_eq!(
        count_of("async.free"),
        1,
        "counted once despite three polls"
    );
    block_on(free(2));
    assert_eq!(count_of("async.free"), 2);
}

struct Service {
    calls: u32,
}

impl Service {
    #[counted("async.method.ref")]
    async fn get(&self) -> u32 {
        YieldOnce(false).await;
        self.calls
    }

    #[counted("async.method.mut")]
    async fn bump(&mut self) {
        YieldOnce(false).await;
        self.calls += 1;
    }
}

trait Native {
    async fn run(&self) -> u32;

    #[counted("async.native.default")]
    async fn twice(&self) -> u32 {
        self.run().await * 2
    }
}

impl Native for Service {
    #[counted("async.native.impl")]
    async fn run(&self) -> u32 {
        YieldOnce(false).await;
        self.calls
    }
}

#[test]
fn async_methods_and_async_fn_in_traits() {
    let mut s = Service { calls: 0 };
    block_on(s.bump());
    assert_eq!(block_on(s.get()), 1);
    assert_eq!(block_on(s.twice()), 2);
    assert_eq!(count_of("async.method.mut"), 1);
    assert_eq!(count_of("async.method.ref"), 1);
    assert_eq!(count_of("async.native.default"), 1);
    assert_eq!(count_of("async.native.impl"), 1);
}

#[async_trait::async_trait]
trait Remote {
    async fn fetch(&self, key: u32) -> u32;

    #[counted("async.trait.default")]
    async fn fetch_two(&self) -> u32 {
        self.fetch(1).await + self.fetch(2).await
    }
}

#[async_trait::async_trait]
impl Remote for Service {
    #[counted("async.trait.impl")]
    async fn fetch(&self, key: u32) -> u32 {
        YieldOnce(false).await;
        key + self.calls
    }
}

#[test]
fn async_trait_methods_count_once_per_call() {
    let s = Service { calls: 10 };
    let future = s.fetch(1);
    // The method ran when called: `#[async_trait]` made it a sync function
    // returning a boxed future.
    assert_eq!(count_of("async.trait.impl"), 1);
    assert_eq!(block_on(future), 11);
    assert_eq!(
        count_of("async.trait.impl"),
        1,
        "polling does not count again"
    );
    assert_eq!(block_on(s.fetch_two()), 23);
    assert_eq!(count_of("async.trait.default"), 1);
    assert_eq!(count_of("async.trait.impl"), 3);
}

#[counted("async.returned")]
fn returns_future(x: u32) -> impl Future<Output = u32> {
    async move {
        YieldOnce(false).await;
        x * 3
    }
}

#[test]
fn async_blocks_returned_from_sync_functions_count_at_call() {
    let future = returns_future(2);
    assert_eq!(count_of("async.returned"), 1);
    assert_eq!(block_on(future), 6);
    assert_eq!(count_of("async.returned"), 1);
}
