//! The hot path in isolation, for instruction counts under callgrind:
//!
//! ```text
//! cargo build --release --example hot_path
//! valgrind --tool=callgrind target/release/examples/hot_path plain 10000000
//! valgrind --tool=callgrind target/release/examples/hot_path counted 10000000
//! ```
//!
//! The difference in instructions divided by the number of calls is what a
//! counted call costs over an uncounted one (`scripts/bench.sh` does this).

use std::hint::black_box;

// A handler that does a little arithmetic. (A `black_box` inside it would
// force a stack frame on every version and hide what counting adds.)

#[inline(never)]
fn plain(x: u64) -> u64 {
    x.wrapping_mul(3) ^ 7
}

#[inline(never)]
#[titus_count::counted("hot_path.counted")]
fn counted(x: u64) -> u64 {
    x.wrapping_mul(3) ^ 7
}

#[inline(never)]
fn count_macro(x: u64) -> u64 {
    titus_count::count!("hot_path.count_macro");
    x.wrapping_mul(3) ^ 7
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "counted".to_owned());
    let calls: u64 = args
        .next()
        .map_or(10_000_000, |n| n.parse().expect("a number of calls"));
    let f: fn(u64) -> u64 = match mode.as_str() {
        "plain" => plain,
        "counted" => counted,
        "count_macro" => count_macro,
        other => panic!("unknown mode `{other}`: plain, counted or count_macro"),
    };
    let mut acc = 0u64;
    for i in 0..calls {
        acc = acc.wrapping_add(f(black_box(i)));
    }
    black_box(acc);
}
