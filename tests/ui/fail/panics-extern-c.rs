// A panic cannot unwind out of an `extern "C"` function: it aborts the
// process, so `panics` could never count it.
#[titus_count::counted("ffi.entry", panics)]
pub extern "C" fn entry(x: u32) -> u32 {
    x + 1
}

fn main() {
    let _ = entry(1);
}
