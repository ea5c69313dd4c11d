use std::future::Future;
use std::pin::Pin;

use titus_count::counted;

#[counted("rpc", outcome)]
fn call(empty: bool) -> Pin<Box<dyn Future<Output = Result<u32, String>>>> {
    if empty {
        return Box::pin(async { Err("empty".to_owned()) });
    }
    Box::pin(async move { Ok(1) })
}

fn main() {
    let _ = call(false);
}
