// Every form of the attribute compiles without a warning.
#![deny(warnings)]

use titus_count::counted;

struct S;

impl S {
    #[counted("nw.method", by = 2u8)]
    fn method(&mut self) {}

    #[counted("nw.owned", outcome)]
    fn owned(self) -> Result<Self, ()> {
        Ok(self)
    }
}

#[counted("nw.unit")]
fn unit() {}

#[counted("nw.generic", panics)]
fn generic<T: Default>() -> T {
    T::default()
}

#[counted("nw.async", outcome, panics)]
async fn fallible(x: u32) -> Result<u32, String> {
    if x == 0 {
        return Err("zero".into());
    }
    Ok(x)
}

fn main() {
    S.method();
    let _ = S.owned();
    unit();
    let _: u8 = generic();
    let _ = fallible(1);
}
