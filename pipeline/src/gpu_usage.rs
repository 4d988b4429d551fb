//! Whether the worker used the GPU: NVML's per-process accounting sampled while its tests run,
//! kept for the container's own processes only, reduced to peak memory and utilisation. No
//! NVML is `unknown`, never a pass.

use std::sync::Mutex;
use std::time::Duration;

use janitor_model::report::{GpuUsage, UsageState};
use janitor_services::engine::ContainerEngine;
use janitor_services::gpu::{GpuProbe, ProcessUse};
use tokio_util::sync::CancellationToken;

/// How often the processes are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// The samples so far.
#[derive(Debug, Default)]
pub struct Tracker {
    samples: u32,
    used: bool,
    peak_memory_mib: Option<u64>,
    peak_sm_percent: Option<u32>,
    /// Why NVML could not say, when it never could.
    unknown: Option<String>,
}

impl Tracker {
    /// One sample: the container's host pids and what NVML listed (or why it could not).
    pub fn observe(&mut self, pids: &[u32], processes: Result<Vec<ProcessUse>, String>) {
        let procs = match processes {
            Ok(p) => p,
            Err(why) => {
                self.unknown.get_or_insert(why);
                return;
            }
        };
        self.samples += 1;
        let ours: Vec<&ProcessUse> = procs.iter().filter(|p| pids.contains(&p.pid)).collect();
        if ours.is_empty() {
            return;
        }
        self.used = true;
        let memory: Option<u64> = ours
            .iter()
            .filter_map(|p| p.memory_mib)
            .reduce(|a, b| a + b);
        if let Some(m) = memory {
            self.peak_memory_mib = Some(self.peak_memory_mib.map_or(m, |p| p.max(m)));
        }
        if let Some(sm) = ours.iter().filter_map(|p| p.sm_percent).max() {
            self.peak_sm_percent = Some(self.peak_sm_percent.map_or(sm, |p| p.max(sm)));
        }
    }

    pub fn finish(self) -> GpuUsage {
        let (state, detail) = match (self.samples, self.used) {
            (0, _) => (
                UsageState::Unknown,
                Some(
                    self.unknown
                        .unwrap_or_else(|| "no sample was taken".to_string()),
                ),
            ),
            (_, true) => (UsageState::Used, None),
            (n, false) => (
                UsageState::Unused,
                Some(format!(
                    "no process of the worker's container was on a GPU in {n} samples"
                )),
            ),
        };
        GpuUsage {
            state,
            samples: self.samples,
            peak_memory_mib: self.peak_memory_mib,
            peak_utilization_percent: self.peak_sm_percent,
            detail,
        }
    }
}

/// Samples the container `name` until `stop`.
pub async fn sample<E: ContainerEngine>(
    engine: &E,
    probe: &dyn GpuProbe,
    name: &str,
    stop: &CancellationToken,
    tracker: &Mutex<Tracker>,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
        // A container not running yet (or any more) has no processes to count.
        let Ok(pids) = engine.pids(name).await else {
            continue;
        };
        let procs = probe.processes();
        if let Ok(mut t) = tracker.lock() {
            t.observe(&pids, procs);
        }
    }
}

/// The `gpu` step's judgement of the usage: `Err` when the GPU had to be used (a GPU job's
/// runpod tests, `gpu_must_be_used`) and was not.
pub fn judge(usage: &GpuUsage, must_be_used: bool) -> Result<String, String> {
    match usage.state {
        UsageState::Used => Ok(format!(
            "the worker used the GPU: peak {} MiB, {} % SM",
            usage
                .peak_memory_mib
                .map_or("?".to_string(), |m| m.to_string()),
            usage
                .peak_utilization_percent
                .map_or("?".to_string(), |u| u.to_string())
        )),
        UsageState::Unused if must_be_used => Err(format!(
            "tests ran on the CPU only: {} (set `gpu_must_be_used: false` if that is intended)",
            usage.detail.as_deref().unwrap_or("no GPU use seen")
        )),
        UsageState::Unused => Ok(format!(
            "the worker did not use the GPU ({}; not required here)",
            usage.detail.as_deref().unwrap_or("no GPU use seen")
        )),
        UsageState::Unknown => Ok(format!(
            "whether the worker used the GPU is unknown: {}",
            usage.detail.as_deref().unwrap_or("no NVML")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, gpu: u32, mem: Option<u64>, sm: Option<u32>) -> ProcessUse {
        ProcessUse {
            pid,
            gpu,
            memory_mib: mem,
            sm_percent: sm,
        }
    }

    /// Samples recorded from an A10G while a faster-whisper worker answered two tests: the
    /// container's python (host pid 4242) appears after the model loads; pid 999 is another
    /// tenant's process on the same GPU and must not count.
    #[test]
    fn recorded_samples() {
        let ours = [4240, 4242];
        let mut t = Tracker::default();
        t.observe(&ours, Ok(vec![p(999, 0, Some(30_000), Some(99))]));
        t.observe(
            &ours,
            Ok(vec![
                p(999, 0, Some(30_000), Some(99)),
                p(4242, 0, Some(3_210), None),
            ]),
        );
        t.observe(
            &ours,
            Ok(vec![
                p(4242, 0, Some(5_120), Some(87)),
                p(4242, 1, Some(1_000), Some(12)),
            ]),
        );
        t.observe(&ours, Ok(vec![p(4242, 0, Some(4_096), Some(40))]));
        let u = t.finish();
        assert_eq!(u.state, UsageState::Used);
        assert_eq!(u.samples, 4);
        assert_eq!(u.peak_memory_mib, Some(6_120));
        assert_eq!(u.peak_utilization_percent, Some(87));
        assert!(judge(&u, true).unwrap().contains("peak 6120 MiB, 87 % SM"));
    }

    #[test]
    fn cpu_only_and_unknown() {
        let mut t = Tracker::default();
        for _ in 0..3 {
            t.observe(&[10], Ok(vec![p(999, 0, Some(100), Some(5))]));
        }
        let u = t.finish();
        assert_eq!(u.state, UsageState::Unused);
        let e = judge(&u, true).unwrap_err();
        assert!(e.starts_with("tests ran on the CPU only: no process of the worker's container was on a GPU in 3 samples"), "{e}");
        assert!(judge(&u, false).is_ok());
        let mut none = Tracker::default();
        none.observe(&[10], Err("NVML is not available: libnvidia-ml.so".into()));
        let u = none.finish();
        assert_eq!(u.state, UsageState::Unknown);
        assert_eq!(
            u.detail.as_deref(),
            Some("NVML is not available: libnvidia-ml.so")
        );
        // Unknown is never a pass of the usage check, nor a failure of the job.
        assert!(judge(&u, true).unwrap().contains("unknown"));
    }
}
