fn main() {
    let n: i32 = 3;
    titus_count::count!("orders", n);
}
