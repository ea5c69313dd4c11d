use titus_count::counted;

const STAGE: &str = "parse";

#[counted(STAGE)]
fn handle() {}

fn main() {
    handle();
}
