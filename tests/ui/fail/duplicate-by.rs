use titus_count::counted;

#[counted("parse", by = 1u8, by = 2u8)]
fn handle() {}

fn main() {
    handle();
}
