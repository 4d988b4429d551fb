//! Shared wire types and config schema for `janitord` and `janitorctl`.

pub mod audience;
pub mod config;
pub mod duration;
pub mod job;
pub mod ledger;
pub mod names;
pub mod pools;
pub mod pricing;
pub mod report;
pub mod runpod;
pub mod yaml;
