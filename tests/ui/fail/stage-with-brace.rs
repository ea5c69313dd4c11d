use titus_count::counted;

#[counted("orders{eu}")]
fn handle() {}

fn main() {
    handle();
}
