use titus_count::counted;

#[counted("parse", outcome, outcome)]
fn handle() -> Result<(), ()> {
    Ok(())
}

fn main() {
    let _ = handle();
}
