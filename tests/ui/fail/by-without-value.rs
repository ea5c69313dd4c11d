use titus_count::counted;

#[counted("parse", by)]
fn handle() {}

fn main() {
    handle();
}
