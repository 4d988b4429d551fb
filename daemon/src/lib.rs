//! janitord: the on-instance daemon that turns queued repository jobs into validated reports.
//! The loop (`event_loop`) turns inputs into events; `runner` runs one job through the pipeline;
//! `settler` owns its result until the message is gone; `recorder` writes the ledger; `decide`
//! and `machine` hold every decision as pure functions.

pub mod decide;
pub mod event_loop;
pub mod health;
pub mod hygiene;
pub mod machine;
pub mod recorder;
pub mod recovery;
pub mod runner;
pub mod settings;
pub mod settler;
pub mod status;
pub mod systemd;
pub mod telemetry;

pub use event_loop::{Daemon, Parts, Services};
