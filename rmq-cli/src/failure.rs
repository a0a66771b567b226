//! Why a command failed, and the exit status that tells a script which kind of failure.

use std::fmt;
use std::process::ExitCode;

/// A failed command: printed on stderr, mapped to the exit status.
#[derive(Debug)]
pub enum Failure {
    /// Redis could not be used: unreachable, refused the password, lost, timed out, or it
    /// refused a command. Exit status 1.
    Redis(rmq_runtime::Error),
    /// The request is wrong: an unknown topic, bad JSON, an invalid option or
    /// configuration, a purge not confirmed. Exit status 2 (clap's own for bad arguments).
    Request(String),
    /// A message id named on the command line is not there. Exit status 3.
    NotFound(String),
}

impl Failure {
    /// The process exit status for this failure.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Redis(_) => 1,
            Failure::Request(_) => 2,
            Failure::NotFound(_) => 3,
        })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Redis(e) => write!(f, "{e}"),
            Failure::Request(text) | Failure::NotFound(text) => f.write_str(text),
        }
    }
}

impl From<rmq_runtime::Error> for Failure {
    fn from(e: rmq_runtime::Error) -> Self {
        use rmq_runtime::Error;
        match e {
            // the runtime's messages already say what is wrong with the request
            Error::InvalidOption(_) | Error::Config(_) => Failure::Request(e.to_string()),
            other => Failure::Redis(other),
        }
    }
}
