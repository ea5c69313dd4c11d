//! Counting sites and the hot path.
//!
//! Each `#[counted]` function and each `count!` invocation expands to one
//! `static` [`Site`] (the stage name) and one `const`-initialised thread-local
//! [`Slot`]: a pointer to this thread's cell for that site, null until the
//! thread first counts there. A counted call is then one thread-local load,
//! a null test, and a plain add to memory only this thread writes.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::cells::AtomicU64 as CellValue;
use std::thread::LocalKey;

use crate::cells::{Registry, ThreadRecord, registry};

const UNASSIGNED: u32 = u32::MAX;

/// A place in the code that counts: a stage name and its lazily assigned
/// stage id. Created by the `#[counted]` and `count!` expansions as a `static`.
#[derive(Debug)]
pub struct Site {
    name: &'static str,
    id: AtomicU32,
    /// Counts made after the counting thread began to exit, when it no longer
    /// has cells. Rare, so a shared atomic is fine here.
    orphaned: AtomicU64,
}

/// Longest stage name, in bytes.
pub const MAX_STAGE_LEN: usize = 128;

/// Checks a stage name at compile time: 1 to 128 bytes of ASCII letters,
/// digits and `_ . - : /`, which every consumer (Redis hash fields,
/// Prometheus labels, JSON, terminal tables, shell arguments) carries safely.
const fn check_stage(name: &str) {
    let bytes = name.as_bytes();
    assert!(
        !bytes.is_empty(),
        "a titus-count stage name must not be empty"
    );
    assert!(
        bytes.len() <= MAX_STAGE_LEN,
        "a titus-count stage name must be at most 128 bytes long"
    );
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        assert!(
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':' | b'/'),
            "a titus-count stage name uses only ASCII letters, digits and `_ . - : /`"
        );
        i += 1;
    }
}

impl Site {
    /// A site counting under `name`.
    ///
    /// # Panics
    ///
    /// If `name` is empty, longer than 128 bytes, or holds a character other
    /// than ASCII letters, digits and `_ . - : /`; in a `static` initialiser
    /// this is a compile-time error.
    pub const fn new(name: &'static str) -> Self {
        check_stage(name);
        Site {
            name,
            id: AtomicU32::new(UNASSIGNED),
            orphaned: AtomicU64::new(0),
        }
    }

    /// The stage this site counts under.
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn stage_id_locked(&'static self, reg: &mut Registry) -> u32 {
        let id = self.id.load(Ordering::Relaxed);
        if id != UNASSIGNED {
            return id;
        }
        let id = reg.stage_id(self.name);
        self.id.store(id, Ordering::Relaxed);
        id
    }

    pub(crate) fn take_orphaned(&self) -> u64 {
        self.orphaned.swap(0, Ordering::Relaxed)
    }
}

/// This thread's cell for one site; empty until the thread first counts there.
#[derive(Debug)]
pub struct Slot(Cell<Option<&'static CellValue>>);

impl Slot {
    /// An empty slot, for a `const` thread-local initialiser.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Slot(Cell::new(None))
    }
}

/// Adds `n` to this thread's count for `site`.
///
/// Once the thread has counted at this site this is a thread-local load, a
/// test and an add to memory no other thread writes: no lock, no allocation,
/// no atomic read-modify-write.
#[inline(always)]
pub fn add(site: &'static Site, slot: &'static LocalKey<Slot>, n: u64) {
    slot.with(|s| match s.0.get() {
        // Only this thread writes the cell, so a relaxed load and store is an
        // exact increment; the collector only reads it.
        Some(cell) => cell.store(
            cell.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        ),
        None => first_count(site, slot, n),
    })
}

/// The thread's tie to its record. Its destructor runs when the thread exits:
/// it empties the thread's slots (so a late count takes the cold path instead
/// of writing a recycled cell) and marks the record finished.
struct ThreadCounter {
    record: &'static ThreadRecord,
    slots: Vec<&'static LocalKey<Slot>>,
}

impl Drop for ThreadCounter {
    fn drop(&mut self) {
        for slot in &self.slots {
            // Slots are const-initialised without a destructor, so they stay
            // accessible for the whole life of the thread.
            let _ = slot.try_with(|s| s.0.set(None));
        }
        self.record.finish();
    }
}

thread_local! {
    static THREAD: RefCell<Option<ThreadCounter>> = const { RefCell::new(None) };
}

/// The cold path: this thread's first count at `site`.
#[cold]
#[inline(never)]
fn first_count(site: &'static Site, slot: &'static LocalKey<Slot>, n: u64) {
    let mut reg = registry();
    let stage = site.stage_id_locked(&mut reg);
    let registered = THREAD.try_with(|thread| {
        let mut thread = thread.borrow_mut();
        let counter = thread.get_or_insert_with(|| ThreadCounter {
            record: reg.acquire_record(),
            slots: Vec::new(),
        });
        let cell = counter.record.push(stage, n);
        slot.with(|s| s.0.set(Some(cell.value())));
        counter.slots.push(slot);
    });
    if registered.is_err() {
        // The thread is exiting and its cells are gone: keep the count on the
        // site, where the collector picks it up.
        site.orphaned.fetch_add(n, Ordering::Relaxed);
        reg.add_orphan_site(site);
    }
}

/// What this process has counted so far, per stage, whether flushed or not.
///
/// Works with or without [`init`](crate::init); includes the counts of threads
/// that have exited.
///
/// # Examples
///
/// ```
/// titus_count_runtime::count!("docs.local_totals", 3);
/// let totals = titus_count_runtime::local_totals();
/// assert_eq!(totals["docs.local_totals"], 3);
/// ```
pub fn local_totals() -> BTreeMap<&'static str, u64> {
    let mut reg = registry();
    reg.collect();
    reg.totals().into_iter().collect()
}

/// Counts `n` (default 1) under a stage, through the same static-site,
/// thread-local hot path as `#[counted]`.
///
/// The stage must be a string literal of 1 to 128 bytes of ASCII letters,
/// digits and `_ . - : /`; anything else is a compile-time error.
///
/// A thread's first count at a site allocates and takes a lock, so counting
/// from inside a global allocator is not supported.
///
/// # Examples
///
/// ```
/// use titus_count_runtime::count;
///
/// fn handle(batch: &[u8]) {
///     count!("bytes.in", batch.len());
///     count!("batches.in");
/// }
/// handle(b"hello");
/// ```
#[macro_export]
macro_rules! count {
    ($stage:literal) => {
        $crate::count!($stage, 1u64)
    };
    ($stage:literal, $n:literal $(,)?) => {
        // A literal is checked at compile time: an unsigned integer, so that
        // `-1i64`, `2.5`, `'a'` or `true` cannot slip through the cast below,
        // and an unsuffixed one becomes a `u64` rather than an `i32`.
        $crate::count!(@add $stage, {
            #[allow(clippy::unnecessary_cast)]
            const __TITUS_COUNT_N: u64 = {
                $crate::__private::check_count_literal(::core::stringify!($n));
                ($n) as u64
            };
            __TITUS_COUNT_N
        })
    };
    ($stage:literal, $n:expr $(,)?) => {
        $crate::count!(@add $stage, $crate::__private::Count::count($n))
    };
    (@add $stage:literal, $n:expr) => {{
        static __TITUS_COUNT_SITE: $crate::__private::Site = $crate::__private::Site::new($stage);
        $crate::__private::thread_local! {
            static __TITUS_COUNT_SLOT: $crate::__private::Slot =
                const { $crate::__private::Slot::new() };
        }
        $crate::__private::add(&__TITUS_COUNT_SITE, &__TITUS_COUNT_SLOT, $n);
    }};
}

/// Checks the source text of a literal amount given to `count!` or `by`, at
/// compile time: an unsigned integer literal, decimal, hexadecimal, octal or
/// binary, with no suffix or an unsigned one up to `u64`.
///
/// # Panics
///
/// If the literal is anything else; in a `const` this is a compile-time
/// error.
pub const fn check_count_literal(text: &str) {
    let b = text.as_bytes();
    assert!(
        b.is_empty() || b[0] != b'-',
        "a count cannot be negative: `count!` and `by` take an unsigned integer"
    );
    assert!(
        !b.is_empty() && b[0].is_ascii_digit(),
        "a count is an unsigned integer: `count!` and `by` take `u8`, `u16`, `u32`, `u64` or `usize`"
    );
    let radix_prefix = b.len() > 1 && b[0] == b'0' && matches!(b[1], b'x' | b'o' | b'b');
    let hex = radix_prefix && b[1] == b'x';
    // Where a suffix starts: the first `u` or `i` (which no digit of any
    // radix is), or for a decimal literal an `f`, `e` or `.` of a float.
    let mut i = if radix_prefix { 2 } else { 0 };
    while i < b.len() {
        let c = b[i];
        if c == b'u' || c == b'i' {
            break;
        }
        assert!(
            hex || !matches!(c, b'.' | b'e' | b'E' | b'f'),
            "a count is a whole number: `count!` and `by` take an unsigned integer"
        );
        i += 1;
    }
    if i < b.len() {
        assert!(
            b[i] == b'u',
            "a count is unsigned: drop the signed suffix, or use `u64`"
        );
        assert!(
            is_at(b, i, b"u8")
                || is_at(b, i, b"u16")
                || is_at(b, i, b"u32")
                || is_at(b, i, b"u64")
                || is_at(b, i, b"usize"),
            "a count fits `u64`: use no suffix or `u8`, `u16`, `u32`, `u64` or `usize`"
        );
    }
}

/// Whether `text[at..]` is exactly `suffix`.
const fn is_at(text: &[u8], at: usize, suffix: &[u8]) -> bool {
    if text.len() - at != suffix.len() {
        return false;
    }
    let mut k = 0;
    while k < suffix.len() {
        if text[at + k] != suffix[k] {
            return false;
        }
        k += 1;
    }
    true
}

/// Amounts that can be counted: the unsigned integers.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a count: `by` and `count!` take an unsigned integer",
    label = "expected `u8`, `u16`, `u32`, `u64` or `usize`",
    note = "convert a signed amount (`u64::try_from(n)`); unsuffixed literals alone (`2 * 3`) make an `i32`: suffix one, as in `2u64`"
)]
pub trait Count {
    /// The amount as a `u64`.
    fn count(self) -> u64;
}

macro_rules! impl_count {
    ($($t:ty),*) => {$(
        impl Count for $t {
            #[inline(always)]
            fn count(self) -> u64 {
                self as u64
            }
        }
    )*};
}
impl_count!(u8, u16, u32, u64, usize);

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn counts_on_many_threads_are_exact() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..10_000 {
                        crate::count!("unit.site.many");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(local_totals()["unit.site.many"], 40_000);
    }

    #[test]
    fn two_sites_share_a_stage() {
        crate::count!("unit.site.shared", 2u32);
        crate::count!("unit.site.shared", 5usize);
        assert_eq!(local_totals()["unit.site.shared"], 7);
    }

    #[test]
    fn literal_counts_are_unsigned_integers() {
        for ok in [
            "0", "7", "1_000", "5u8", "9u16", "3u32", "12u64", "4usize", "0x1f", "0xf32", "0o17",
            "0b101u8",
        ] {
            check_count_literal(ok);
        }
        for bad in [
            "-1", "-1i64", "5i32", "2isize", "2.5", "1e3", "2f64", "7u128", "'a'", "true", "\"3\"",
        ] {
            let refused = std::panic::catch_unwind(|| check_count_literal(bad));
            assert!(refused.is_err(), "{bad} is not a count");
        }
    }

    #[test]
    fn finished_records_are_recycled() {
        // Many short threads one after another reuse a bounded set of records.
        for _ in 0..200 {
            std::thread::spawn(|| crate::count!("unit.site.churn"))
                .join()
                .unwrap();
        }
        assert_eq!(local_totals()["unit.site.churn"], 200);
        let records = registry().record_count();
        for _ in 0..200 {
            std::thread::spawn(|| crate::count!("unit.site.churn"))
                .join()
                .unwrap();
        }
        assert_eq!(local_totals()["unit.site.churn"], 400);
        // Other tests in this binary run threads concurrently, so allow a few.
        assert!(registry().record_count() <= records + 8);
    }
}
