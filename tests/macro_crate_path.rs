//! `crate = PATH` tells the expansion where titus-count is: for a crate that
//! re-exports it (a company's facade crate), or that depends on it under
//! another name.

use std::sync::atomic::{AtomicU32, Ordering};

fn count_of(stage: &str) -> u64 {
    titus_count::local_totals().get(stage).copied().unwrap_or(0)
}

/// What a facade crate does: re-export titus-count under its own path.
mod facade {
    pub use titus_count as counting;
}

/// A stand-in for titus-count's support module whose `count!` also notes
/// that it was used, so the test sees the expansion go through the given
/// path rather than `::titus_count`.
mod shim {
    pub static USES: AtomicU32 = AtomicU32::new(0);

    /// A plain count needs only `count!` from it.
    pub mod __private {
        macro_rules! noting_count {
            ($($args:tt)*) => {{
                $crate::shim::USES.fetch_add(1, ::std::sync::atomic::Ordering::Relaxed);
                ::titus_count::count!($($args)*);
            }};
        }
        pub(crate) use noting_count as count;
    }

    use super::AtomicU32;
}

#[titus_count::counted("crate_path.shim", crate = shim)]
fn through_the_shim() {}

#[titus_count::counted("crate_path.facade", crate = facade::counting, outcome, panics)]
fn through_the_facade(fail: bool) -> Result<u8, String> {
    if fail {
        Err("failed".to_owned())
    } else {
        Ok(1)
    }
}

#[test]
fn the_expansion_goes_through_the_given_path() {
    through_the_shim();
    through_the_shim();
    assert_eq!(shim::USES.load(Ordering::Relaxed), 2);
    assert_eq!(count_of("crate_path.shim"), 2);

    assert_eq!(through_the_facade(false), Ok(1));
    assert!(through_the_facade(true).is_err());
    assert_eq!(count_of("crate_path.facade"), 2);
    assert_eq!(count_of("crate_path.facade.ok"), 1);
    assert_eq!(count_of("crate_path.facade.err"), 1);
}
