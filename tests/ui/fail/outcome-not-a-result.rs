use titus_count::counted;

#[counted("parse", outcome)]
fn handle() -> u32 {
    1
}

fn main() {
    handle();
}
