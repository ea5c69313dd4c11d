#[titus_count::counted("orders", crate)]
fn handle() {}

fn main() {
    handle();
}
