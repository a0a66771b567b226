//! Compile-fail tests of the macros live in `ui-tests/tests/`; this crate has no code.
