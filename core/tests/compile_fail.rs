//! Misuse of `#[node]` is a compile error with a clear message.

#[test]
fn node_macro_misuse() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
