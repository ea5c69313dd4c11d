use titus_count::counted;

#[counted("emit", by = delta)]
fn emit(delta: i64) -> i64 {
    delta
}

fn main() {
    emit(1);
}
