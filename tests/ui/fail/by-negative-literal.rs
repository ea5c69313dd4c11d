use titus_count::counted;

#[counted("emit", by = -2)]
fn emit() {}

fn main() {
    emit();
}
