use titus_count::counted;

#[counted("parse", outcome)]
fn handle() {}

fn main() {
    handle();
}
