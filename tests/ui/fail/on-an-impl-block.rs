use titus_count::counted;

struct Parser;

#[counted("parse")]
impl Parser {
    fn parse(&self) {}
}

fn main() {
    Parser.parse();
}
