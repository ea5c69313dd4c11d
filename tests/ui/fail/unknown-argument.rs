use titus_count::counted;

#[counted("parse", level = 3)]
fn handle() {}

fn main() {
    handle();
}
