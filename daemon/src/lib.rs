//! janitord: the on-instance daemon that turns queued repository jobs into validated reports.

pub mod aws;
pub mod backoff;
pub mod daemon;
pub mod docker;
pub mod gpu;
pub mod health;
pub mod hygiene;
pub mod lifecycle;
pub mod logs;
pub mod machine;
pub mod pipeline;
pub mod settings;
pub mod systemd;
pub mod telemetry;
