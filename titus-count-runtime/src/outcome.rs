//! Support for `#[counted(..., outcome, panics)]`: telling a success from a
//! failure, and noticing a panic.

use std::future::Future;

/// A result that is a success or a failure: what `outcome` counts.
#[diagnostic::on_unimplemented(
    message = "`#[counted(..., outcome)]` needs a function that returns a `Result`, not `{Self}`",
    label = "`outcome` counts `STAGE.ok` and `STAGE.err` by the `Result` returned"
)]
pub trait Outcome {
    /// Whether this is a success.
    fn is_ok(&self) -> bool;
}

impl<T, E> Outcome for Result<T, E> {
    #[inline(always)]
    fn is_ok(&self) -> bool {
        Result::is_ok(self)
    }
}

/// Runs its closure if a panic that began after the guard was made unwinds
/// past it.
///
/// A guard made while the thread was already unwinding (a counted function
/// called from a `Drop` during a panic) counts nothing: that call did not
/// panic.
pub struct OnPanic<F: FnMut()> {
    on_panic: F,
    unwinding_before: bool,
}

impl<F: FnMut()> OnPanic<F> {
    /// A guard that calls `on_panic` when a panic unwinds past it.
    #[inline(always)]
    pub fn new(on_panic: F) -> Self {
        OnPanic {
            on_panic,
            unwinding_before: std::thread::panicking(),
        }
    }
}

impl<F: FnMut()> Drop for OnPanic<F> {
    #[inline(always)]
    fn drop(&mut self) {
        if !self.unwinding_before && std::thread::panicking() {
            (self.on_panic)();
        }
    }
}

/// Runs `future`, calling `on_panic` if one of its polls panics.
///
/// The guard lives only while a poll runs, so a future that is dropped
/// unfinished while some other code panics (a sibling in a `join!`, say)
/// counts nothing.
pub async fn watch_panics<F: Future>(future: F, mut on_panic: impl FnMut()) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let _guard = OnPanic::new(&mut on_panic);
        future.as_mut().poll(cx)
    })
    .await
}

/// Returns the future unchanged; naming its output type lets `?` inside an
/// `async` block infer its error conversion.
#[inline(always)]
pub fn output_of<T, F: Future<Output = T>>(future: F) -> F {
    future
}

/// Calls `f` once: the body of a sync function counted with `outcome`.
#[inline(always)]
pub fn call_once<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Whether `result` is a success; the type is named by the expansion so a
/// function that does not return a `Result` is reported at its return type.
#[inline(always)]
pub fn is_ok<R: Outcome>(result: &R) -> bool {
    result.is_ok()
}
