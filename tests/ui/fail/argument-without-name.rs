use titus_count::counted;

#[counted("parse", 1)]
fn parse() {}

fn main() {
    parse();
}
