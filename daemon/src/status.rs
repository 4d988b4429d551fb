//! The daemon's shared status: what it is doing, its cache, disk, GPUs and job counts. The loop
//! writes it; `/health` and `/metrics` read it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use time::OffsetDateTime;

use janitor_services::disk::DiskStats;
use janitor_services::gpu::{Inventory, Sample};

use crate::hygiene::Cleanup;

/// Upper bounds (seconds) of the duration histograms.
pub const BUCKETS: [f64; 9] = [
    30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

#[derive(Debug, Clone, Default, Serialize)]
pub struct Histogram {
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, v: f64) {
        if self.counts.len() != BUCKETS.len() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CurrentJob {
    pub job_id: String,
    pub run_id: String,
    pub repository: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheStatus {
    pub dir: String,
    pub own_volume: bool,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    pub evicted_total: u64,
    pub last_cleanup: Option<Cleanup>,
}

/// What the daemon knows about itself; `/health` is this, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub instance_id: String,
    pub version: String,
    pub state: String,
    pub current_job: Option<CurrentJob>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_successful_poll: Option<OffsetDateTime>,
    pub unhealthy: Option<String>,
    /// Reports waiting in the spool for the store; no job is taken while this is above 0.
    pub unsettled_reports: usize,
    pub disk: Option<DiskStats>,
    pub cache: CacheStatus,
    pub gpus: Inventory,
    pub gpu_samples: Vec<Sample>,
    pub jobs_by_status: BTreeMap<String, u64>,
    pub job_duration_seconds: Histogram,
    pub queue_wait_seconds: Histogram,
    pub process: Process,
    /// Evictions not yet reported in a job's report.
    #[serde(skip)]
    pub pending_evictions: Vec<String>,
}

impl Status {
    /// Runs `f` on the shared status; a poisoned lock is still used: it only holds figures.
    pub fn update<T>(shared: &Shared, f: impl FnOnce(&mut Status) -> T) -> T {
        match shared.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    pub fn new(
        instance_id: &str,
        cache_dir: &std::path::Path,
        own_volume: bool,
        gpus: Inventory,
    ) -> Status {
        Status {
            instance_id: instance_id.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            state: "Starting".to_string(),
            current_job: None,
            last_successful_poll: None,
            unhealthy: None,
            unsettled_reports: 0,
            disk: janitor_services::disk::disk(cache_dir),
            cache: CacheStatus {
                dir: cache_dir.display().to_string(),
                own_volume,
                ..CacheStatus::default()
            },
            gpus,
            gpu_samples: Vec::new(),
            jobs_by_status: BTreeMap::new(),
            job_duration_seconds: Histogram::default(),
            queue_wait_seconds: Histogram::default(),
            process: Process::default(),
            pending_evictions: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Process {
    pub cpu_percent: f32,
    pub resident_bytes: u64,
}

/// The status the loop writes and the health server reads.
pub type Shared = Arc<Mutex<Status>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        for v in [10.0, 45.0, 4000.0, 9000.0] {
            h.observe(v);
        }
        assert_eq!(h.counts, [1, 2, 2, 2, 2, 2, 2, 2, 3]);
        assert_eq!((h.count, h.sum), (4, 13055.0));
    }
}
