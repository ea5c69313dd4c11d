fn main() {
    titus_count::count!("bytes", 2.5);
}
