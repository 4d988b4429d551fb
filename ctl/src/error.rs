//! janitorctl's errors, each naming what failed and with which input; [`CtlError::exit_code`]
//! maps them to the exit codes scripts act on: 2 for what the user can fix (usage, settings,
//! config, an unknown id), 1 for what failed underneath (AWS, Docker, files).

use std::path::PathBuf;

use janitor_services::engine::EngineError;
use janitor_services::error::ServiceError;

/// Exit code for usage, config and settings errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for a failed service call or a failed job.
pub const EXIT_FAILED: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad flags or arguments.
    #[error("{0}")]
    Usage(String),
    /// Settings missing or wrong (the message names the flag, variable and file).
    #[error("{0}")]
    Settings(String),
    /// The config file has problems; each was printed as file:line: field: message.
    #[error("{}: {count} problem(s); nothing was started", file.display())]
    Config { file: PathBuf, count: usize },
    /// Something asked for by id that the ledger or the cloud does not have.
    #[error("{0}")]
    NotFound(String),
    /// An AWS call failed.
    #[error("{context}: {source}")]
    Service {
        context: String,
        #[source]
        source: ServiceError,
    },
    /// A ledger document that cannot be read as what it should be.
    #[error("{key} is not a valid document: {reason}")]
    Document { key: String, reason: String },
    /// The local Docker engine (`run --local`).
    #[error("{0} (is Docker running, and may this user use it?)")]
    Engine(#[from] EngineError),
    /// A local file or directory.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_)
            | CtlError::Settings(_)
            | CtlError::Config { .. }
            | CtlError::NotFound(_) => EXIT_USAGE,
            CtlError::Service { .. }
            | CtlError::Document { .. }
            | CtlError::Engine(_)
            | CtlError::Io { .. } => EXIT_FAILED,
        }
    }

    /// A service failure with what ctl was doing.
    pub fn service(context: impl Into<String>) -> impl FnOnce(ServiceError) -> CtlError {
        let context = context.into();
        move |source| CtlError::Service { context, source }
    }

    /// A local file failure.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CtlError {
        let path = path.into();
        move |source| CtlError::Io { path, source }
    }
}

impl From<crate::settings::SettingsError> for CtlError {
    fn from(e: crate::settings::SettingsError) -> Self {
        CtlError::Settings(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use janitor_services::error::ErrorKind;

    #[test]
    fn exit_codes() {
        let svc = ServiceError::new("S3", "GetObject", "k", ErrorKind::Unavailable, "refused");
        let cases = [
            (CtlError::Usage("x".into()), 2),
            (CtlError::Settings("x".into()), 2),
            (
                CtlError::Config {
                    file: "a.yaml".into(),
                    count: 3,
                },
                2,
            ),
            (CtlError::NotFound("run".into()), 2),
            (CtlError::service("reading the run")(svc), 1),
            (
                CtlError::Document {
                    key: "k".into(),
                    reason: "eof".into(),
                },
                1,
            ),
            (CtlError::io("/x")(std::io::Error::other("denied")), 1),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e}");
        }
        assert_eq!(
            CtlError::Config {
                file: "a.yaml".into(),
                count: 3
            }
            .to_string(),
            "a.yaml: 3 problem(s); nothing was started"
        );
    }
}
