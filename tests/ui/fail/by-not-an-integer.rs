use titus_count::counted;

#[counted("emit", by = name)]
fn emit(name: &str) -> usize {
    name.len()
}

fn main() {
    emit("x");
}
