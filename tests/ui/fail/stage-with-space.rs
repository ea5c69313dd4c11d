use titus_count::counted;

#[counted("orders in")]
fn handle() {}

fn main() {
    handle();
}
