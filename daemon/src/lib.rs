//! janitord: the on-instance daemon that turns queued repository jobs into validated reports.

pub mod aws;
pub mod backoff;
pub mod daemon;
pub mod docker;
pub mod logs;
pub mod pipeline;
pub mod settings;
pub mod telemetry;
