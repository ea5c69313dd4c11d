fn main() {
    titus_count::count!("orders", -1i64);
}
