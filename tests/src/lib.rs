//! Integration tests live in `tests/tests/`. This library holds only what a test shares
//! with a separate process: the topics of the fault tests ([`fault`]), consumed by the
//! `rmq-test-consumer` binary (`src/bin/`) and produced by `tests/tests/faults_*.rs`.
//!
//! No `#[handler]` lives here: the handlers are in the binary, so a test binary that links
//! this library registers no handler of its own for these topics.

pub mod fault;
