// Expansions name only absolute paths and hidden locals: they compile, with
// no warning, when the user shadows `std`, `core` and the runtime crate, and
// names items like the macro's own.
#![deny(warnings)]
#![no_implicit_prelude]

mod std {}
mod core {}
mod titus_count_runtime {}

#[allow(non_upper_case_globals, dead_code)]
static __TITUS_COUNT_SITE: u8 = 0;
#[allow(dead_code)]
struct Site;
#[allow(dead_code)]
fn add() {}
#[allow(dead_code)]
fn call_once() {}

#[::titus_count::counted("hygiene.plain")]
fn plain(__titus_count_result: u32) -> u32 {
    __titus_count_result
}

#[::titus_count::counted("hygiene.outcome", outcome, panics, by = n)]
fn outcome(n: u32) -> ::core::result::Result<u32, ()> {
    let __titus_count_on_panic = n;
    ::core::result::Result::Ok(__titus_count_on_panic)
}

#[::titus_count::counted("hygiene.async", outcome)]
async fn in_async() -> ::core::result::Result<(), ()> {
    ::core::result::Result::Ok(())
}

fn main() {
    let _ = plain(1);
    let _ = outcome(2);
    let _ = in_async();
    ::titus_count::count!("hygiene.count");
}
