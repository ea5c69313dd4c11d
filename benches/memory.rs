//! Memory: heap bytes per counting thread and per site a thread counts at,
//! measured with a counting allocator while threads that have counted are
//! parked. (Thread stacks are the threads' own, not titus-count's.)
//!
//! `cargo bench --bench memory` (prints a table; `scripts/bench.sh` keeps it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Barrier};

/// The system allocator, keeping a running total of live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers every call to the system allocator with the same layout;
// it only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn sixteen_sites() {
    titus_count::count!("memory.s00");
    titus_count::count!("memory.s01");
    titus_count::count!("memory.s02");
    titus_count::count!("memory.s03");
    titus_count::count!("memory.s04");
    titus_count::count!("memory.s05");
    titus_count::count!("memory.s06");
    titus_count::count!("memory.s07");
    titus_count::count!("memory.s08");
    titus_count::count!("memory.s09");
    titus_count::count!("memory.s10");
    titus_count::count!("memory.s11");
    titus_count::count!("memory.s12");
    titus_count::count!("memory.s13");
    titus_count::count!("memory.s14");
    titus_count::count!("memory.s15");
}

fn one_site() {
    titus_count::count!("memory.s00");
}

/// Heap bytes held while `threads` parked threads have run `work`, minus
/// the same threads having counted nothing. Run in a fresh process, so every
/// thread gets a new record (records are reused only once a thread exits).
fn held(threads: usize, work: fn()) -> isize {
    let measure = |work: Option<fn()>| {
        let ready = Arc::new(Barrier::new(threads + 1));
        let done = Arc::new(Barrier::new(threads + 1));
        let before = LIVE.load(Ordering::SeqCst);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (ready, done) = (ready.clone(), done.clone());
                std::thread::spawn(move || {
                    if let Some(work) = work {
                        work();
                    }
                    ready.wait();
                    done.wait();
                })
            })
            .collect();
        ready.wait();
        // The collector's memory of each cell is part of the cost.
        let _ = titus_count::local_totals();
        let after = LIVE.load(Ordering::SeqCst);
        done.wait();
        for h in handles {
            h.join().unwrap();
        }
        after - before
    };
    let baseline = measure(None);
    measure(Some(work)) - baseline
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        println!("memory: bench");
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--measure") {
        let threads: usize = args[i + 1].parse().unwrap();
        let sites: usize = args[i + 2].parse().unwrap();
        let work = if sites == 1 {
            one_site as fn()
        } else {
            sixteen_sites
        };
        println!("{}", held(threads, work));
        return;
    }
    println!(
        "| threads | sites per thread | heap held by titus-count | per thread | per thread and site |"
    );
    println!("|---|---|---|---|---|");
    for threads in [16usize, 64, 256] {
        for sites in [1usize, 16] {
            let output = std::process::Command::new(&args[0])
                .args(["--measure", &threads.to_string(), &sites.to_string()])
                .output()
                .expect("run the measurement");
            let bytes: isize = String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .unwrap();
            println!(
                "| {threads} | {sites} | {bytes} B | {} B | {} B |",
                bytes / threads as isize,
                bytes / (threads * sites) as isize
            );
        }
    }
}
