fn main() {
    titus_count::count!("orders in");
}
