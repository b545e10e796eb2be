//! Compile-fail and pass cases of the `#[saga]` macro (trybuild). Re-bless after a
//! toolchain bump with `TRYBUILD=overwrite cargo test --test ui`, then review the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/parse/*.rs");
    cases.compile_fail("tests/ui/validate/*.rs");
    cases.compile_fail("tests/ui/typeck/*.rs");
    cases.compile_fail("tests/ui/signal/*.rs");
    cases.compile_fail("tests/ui/child/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
