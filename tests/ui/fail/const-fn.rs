use titus_count::counted;

#[counted("parse")]
const fn limit() -> u32 {
    3
}

fn main() {
    let _ = limit();
}
