// An amount built only from unsuffixed literals is an `i32`: the error says
// how to make it a count.
#[titus_count::counted("batches", by = if retry { 2 } else { 1 })]
fn send(retry: bool) {
    let _ = retry;
}

fn main() {
    send(true);
}
