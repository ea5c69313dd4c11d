// Literal amounts: unsuffixed, unsigned suffixes and other radixes, through
// `by` and `count!`.
#![deny(warnings)]

use titus_count::counted;

#[counted("lit.by", by = 2)]
fn by_two() {}

#[counted("lit.by_u8", by = 3u8)]
fn by_three() {}

fn main() {
    by_two();
    by_three();
    titus_count::count!("lit.unsuffixed", 5_000_000_000);
    titus_count::count!("lit.hex", 0x10);
    titus_count::count!("lit.usize", 4usize);
    let totals = titus_count::local_totals();
    assert_eq!(totals["lit.by"], 2);
    assert_eq!(totals["lit.by_u8"], 3);
    assert_eq!(totals["lit.unsuffixed"], 5_000_000_000);
    assert_eq!(totals["lit.hex"], 16);
    assert_eq!(totals["lit.usize"], 4);
}
