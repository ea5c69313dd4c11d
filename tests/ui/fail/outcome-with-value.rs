use titus_count::counted;

#[counted("parse", outcome = true)]
fn parse() -> Result<(), ()> {
    Ok(())
}

fn main() {
    let _ = parse();
}
