use titus_count::counted;

#[counted("check", outcome)]
#[track_caller]
fn check(v: u32) -> Result<u32, String> {
    assert!(v > 0);
    Ok(v)
}

fn main() {
    let _ = check(1);
}
