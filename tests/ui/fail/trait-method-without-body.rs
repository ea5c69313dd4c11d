use titus_count::counted;

trait Stage {
    #[counted("parse")]
    fn handle(&self);
}

fn main() {}
