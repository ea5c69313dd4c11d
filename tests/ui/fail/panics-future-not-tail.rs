use std::future::Future;

use titus_count::counted;

#[counted("job", panics)]
fn job() -> impl Future<Output = u32> {
    let future = async { 1 };
    future
}

fn main() {
    let _ = job();
}
