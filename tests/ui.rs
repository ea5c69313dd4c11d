//! Compile-time behaviour of `#[counted]`: what must compile without a
//! warning, and every misuse as one clear error at the user's tokens.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
