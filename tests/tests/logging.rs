//! `rmq_runtime::logging` installs a subscriber only where none exists, and events then
//! reach it. (One test binary = one process = one global subscriber, so this file holds a
//! single test.)

use rmq_runtime::logging::{setup_json_logging, setup_simple_logging, LoggingError};

#[test]
fn installs_once_and_never_clobbers_an_existing_subscriber() {
    setup_json_logging().expect("no subscriber was installed yet");
    if std::env::var_os("RUST_LOG").is_none() && std::env::var_os("LOG_LEVEL").is_none() {
        assert!(
            tracing::enabled!(tracing::Level::INFO),
            "INFO is on by default"
        );
        assert!(!tracing::enabled!(tracing::Level::DEBUG));
    }
    let second = setup_simple_logging().expect_err("replaced the installed subscriber");
    assert!(
        matches!(second, LoggingError::AlreadyInstalled),
        "{second:?}"
    );
    assert!(second.to_string().contains("already installed"));
}
