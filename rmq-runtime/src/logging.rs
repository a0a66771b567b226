//! One-call logging set-ups, like MX-RMQ's `setup_basic_logging` /
//! `setup_colored_logging` / simple variant, plus JSON for production. The library itself
//! never installs a subscriber; these are for programs that have none.
//!
//! The level comes from `RUST_LOG` (full `tracing` filter syntax, e.g.
//! `info,rmq_runtime=debug`), else `LOG_LEVEL` (`trace`, `debug`, `info`, `warn`, `error`),
//! else `info`. Payloads are never logged above TRACE.
//!
//! ```no_run
//! rmq_runtime::logging::setup_colored_logging().expect("logging");
//! ```

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The program already installed a global subscriber; it is left as it is.
    #[error("a tracing subscriber is already installed in this program; rmq left it in place (call the rmq logging set-up only in programs that install none)")]
    AlreadyInstalled,
    /// `RUST_LOG` or `LOG_LEVEL` holds something that is not a filter.
    #[error("{variable}={value:?} is not a valid log filter: {reason} — use e.g. {example}")]
    BadFilter {
        /// `RUST_LOG` or `LOG_LEVEL`.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
        /// An example of a valid value.
        example: &'static str,
    },
}

/// Plain lines with timestamps, no colours.
pub fn setup_basic_logging() -> Result<(), LoggingError> {
    install(Format::Plain)
}

/// Like [`setup_basic_logging`], coloured when standard error is a terminal.
pub fn setup_colored_logging() -> Result<(), LoggingError> {
    install(Format::Colored)
}

/// Compact lines without timestamps (for journald, `docker logs` and other collectors that
/// add their own).
pub fn setup_simple_logging() -> Result<(), LoggingError> {
    install(Format::Simple)
}

/// One JSON object per line, for log pipelines in production.
pub fn setup_json_logging() -> Result<(), LoggingError> {
    install(Format::Json)
}

enum Format {
    Plain,
    Colored,
    Simple,
    Json,
}

fn install(format: Format) -> Result<(), LoggingError> {
    let filter = filter_from(
        std::env::var("RUST_LOG").ok(),
        std::env::var("LOG_LEVEL").ok(),
    )?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        Format::Plain => builder.with_ansi(false).try_init(),
        Format::Colored => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        Format::Simple => builder.compact().without_time().with_ansi(false).try_init(),
        Format::Json => builder.json().try_init(),
    };
    installed.map_err(|_| LoggingError::AlreadyInstalled)
}

/// The filter from `RUST_LOG`, else `LOG_LEVEL`, else `info`.
fn filter_from(
    rust_log: Option<String>,
    log_level: Option<String>,
) -> Result<EnvFilter, LoggingError> {
    if let Some(value) = rust_log.filter(|v| !v.trim().is_empty()) {
        return EnvFilter::try_new(&value).map_err(|e| LoggingError::BadFilter {
            variable: "RUST_LOG",
            reason: e.to_string(),
            value,
            example: "info or info,rmq_runtime=debug",
        });
    }
    let level = log_level
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "info".into());
    match level.trim().to_ascii_lowercase().as_str() {
        l @ ("trace" | "debug" | "info" | "warn" | "error") => Ok(EnvFilter::new(l)),
        "warning" => Ok(EnvFilter::new("warn")),
        _ => Err(LoggingError::BadFilter {
            variable: "LOG_LEVEL",
            value: level,
            reason: "not a level".into(),
            example: "trace, debug, info, warn or error",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_wins_then_log_level_then_info() {
        let f = filter_from(Some("debug,rmq_runtime=trace".into()), Some("error".into()));
        // EnvFilter prints target directives first
        assert_eq!(f.unwrap().to_string(), "rmq_runtime=trace,debug");
        assert_eq!(
            filter_from(None, Some("WARNING".into()))
                .unwrap()
                .to_string(),
            "warn"
        );
        assert_eq!(filter_from(None, None).unwrap().to_string(), "info");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = filter_from(None, Some("verbose".into())).unwrap_err();
        assert!(e.to_string().starts_with("LOG_LEVEL=\"verbose\""), "{e}");
        let e = filter_from(Some("info,=[".into()), None).unwrap_err();
        assert!(e.to_string().starts_with("RUST_LOG="), "{e}");
    }
}
