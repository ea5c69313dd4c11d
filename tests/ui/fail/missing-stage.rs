use titus_count::counted;

#[counted]
fn handle() {}

fn main() {
    handle();
}
