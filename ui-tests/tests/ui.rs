//! Compile-fail and compile-pass tests of `#[topic]` and `#[handler]`.
//!
//! The expected `.stderr` files hold the compiler's exact wording, which changes between
//! releases, so the test runs only on the toolchain they were written with. After a
//! toolchain or macro change: `TRYBUILD=overwrite cargo test -p rmq-ui-tests`, then read
//! every changed `.stderr` and check that each error still points at the right token.

#[rustversion::stable(1.95)]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/fail/*.rs");
    t.pass("tests/pass/*.rs");
}

#[rustversion::not(stable(1.95))]
#[test]
fn ui() {
    eprintln!("ui tests skipped: their .stderr files are written for stable 1.95");
}
