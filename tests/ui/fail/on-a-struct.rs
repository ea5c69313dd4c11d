use titus_count::counted;

#[counted("parse")]
struct Parser;

fn main() {
    let _ = Parser;
}
