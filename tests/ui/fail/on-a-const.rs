use titus_count::counted;

#[counted("parse")]
const LIMIT: u32 = 3;

fn main() {
    let _ = LIMIT;
}
