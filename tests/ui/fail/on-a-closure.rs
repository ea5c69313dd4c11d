use titus_count::counted;

fn main() {
    let f = #[counted("parse")] || 1;
    f();
}
