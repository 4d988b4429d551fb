//! The outside services, one narrow trait each with its real implementation beside it: the job
//! queue and report store (`aws`), the log service (`logs`), the fleet (`fleet`), registry logins
//! (`registry`), job metrics (`metrics`), the container engine (`engine`), the GPUs (`gpu`) and
//! the instance metadata (`imds`). Every error carries an [`error::ErrorKind`] that says whether
//! a retry can help.

pub mod aws;
pub mod backoff;
pub mod buildkit;
pub mod disk;
pub mod engine;
pub mod error;
pub mod fleet;
pub mod github;
pub mod gpu;
pub mod imds;
pub mod logs;
pub mod metrics;
pub mod registry;
pub mod secrets;

pub use error::{ErrorKind, ServiceError};
