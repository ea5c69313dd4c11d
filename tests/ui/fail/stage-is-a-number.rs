use titus_count::counted;

#[counted(42)]
fn handle() {}

fn main() {
    handle();
}
