//! The GPUs: the `GpuProbe` trait (what the instance has, whether it is healthy enough for a GPU
//! job, samples for `/metrics`) and its NVML implementation (nvml-wrapper). No NVML library
//! means "no GPU", not an error.

use nvml_wrapper::enum_wrappers::device::{TemperatureSensor, TemperatureThreshold};
use nvml_wrapper::Nvml;
use serde::Serialize;

/// Above this temperature a GPU takes no job when NVML gives no slowdown threshold.
pub const DEFAULT_MAX_TEMPERATURE_C: u32 = 90;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_total_mib: u64,
}

/// What NVML reported at start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inventory {
    pub count: u32,
    pub devices: Vec<Device>,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
    /// Why there is no GPU, when there is none.
    pub unavailable: Option<String>,
}

/// One device's live figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub index: u32,
    pub utilization_percent: u32,
    pub memory_used_mib: u64,
    pub memory_total_mib: u64,
    pub temperature_c: Option<u32>,
}

/// One process's use of one GPU at one moment (NVML's per-process accounting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessUse {
    /// The host's process id.
    pub pid: u32,
    pub gpu: u32,
    pub memory_mib: Option<u64>,
    /// Streaming-multiprocessor utilisation over NVML's last sampling window.
    pub sm_percent: Option<u32>,
}

/// Why the GPUs cannot take a job now. Not retryable on this instance: the job goes back to
/// the queue for another one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GpuUnusable(pub String);

/// The GPUs as the daemon asks about them.
pub trait GpuProbe: Send + Sync {
    /// What is there (called at start).
    fn inventory(&self) -> Inventory;
    /// Before a GPU job: the count is `expected`, nothing is failing or overheating.
    fn check(&self, expected: u32) -> Result<(), GpuUnusable>;
    /// Live figures for `/metrics`.
    fn samples(&self) -> Vec<Sample>;
    /// The processes using a GPU now; `Err` when NVML is absent or cannot say.
    fn processes(&self) -> Result<Vec<ProcessUse>, String>;
}

impl GpuProbe for Probe {
    fn inventory(&self) -> Inventory {
        Probe::inventory(self)
    }
    fn check(&self, expected: u32) -> Result<(), GpuUnusable> {
        Probe::check(self, expected).map_err(GpuUnusable)
    }
    fn samples(&self) -> Vec<Sample> {
        Probe::samples(self)
    }
    fn processes(&self) -> Result<Vec<ProcessUse>, String> {
        Probe::processes(self)
    }
}

/// NVML, when the library is there.
pub struct Probe {
    nvml: Result<Nvml, String>,
}

impl Probe {
    /// Loads NVML. Failure to load (no driver, no GPU) is remembered as the reason.
    pub fn open() -> Probe {
        Probe {
            nvml: Nvml::init().map_err(|e| format!("NVML is not available: {e}")),
        }
    }

    /// A probe that sees no GPU, for machines that are known to have none.
    pub fn none(reason: &str) -> Probe {
        Probe {
            nvml: Err(reason.to_string()),
        }
    }

    pub fn inventory(&self) -> Inventory {
        let nvml = match &self.nvml {
            Ok(n) => n,
            Err(e) => {
                return Inventory {
                    count: 0,
                    devices: Vec::new(),
                    driver_version: None,
                    cuda_version: None,
                    unavailable: Some(e.clone()),
                };
            }
        };
        let count = nvml.device_count().unwrap_or(0);
        let devices = (0..count)
            .filter_map(|i| {
                let d = nvml.device_by_index(i).ok()?;
                Some(Device {
                    index: i,
                    name: d.name().unwrap_or_else(|_| "unknown".to_string()),
                    uuid: d.uuid().unwrap_or_default(),
                    memory_total_mib: d
                        .memory_info()
                        .map(|m| m.total / (1024 * 1024))
                        .unwrap_or(0),
                })
            })
            .collect();
        let cuda = nvml.sys_cuda_driver_version().ok().map(|v| {
            format!(
                "{}.{}",
                nvml_wrapper::cuda_driver_version_major(v),
                nvml_wrapper::cuda_driver_version_minor(v)
            )
        });
        Inventory {
            count,
            devices,
            driver_version: nvml.sys_driver_version().ok(),
            cuda_version: cuda,
            unavailable: (count == 0).then(|| "NVML found no GPU".to_string()),
        }
    }

    /// Checks the GPUs before a GPU job: the count is what it was at start, no page retirement is
    /// pending, no GPU is at its slowdown temperature. `Err` says what is wrong.
    pub fn check(&self, expected: u32) -> Result<(), String> {
        let nvml = self.nvml.as_ref().map_err(Clone::clone)?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML cannot count the GPUs: {e}"))?;
        if count == 0 {
            return Err("no GPU".to_string());
        }
        if count != expected {
            return Err(format!(
                "{count} GPU(s) visible, {expected} at start: a GPU fell off the bus"
            ));
        }
        for i in 0..count {
            let d = nvml
                .device_by_index(i)
                .map_err(|e| format!("GPU {i}: {e}"))?;
            if d.are_pages_pending_retired().unwrap_or(false) {
                return Err(format!(
                    "GPU {i}: memory pages are waiting to be retired; the instance needs a reboot"
                ));
            }
            if let Ok(t) = d.temperature(TemperatureSensor::Gpu) {
                let limit = d
                    .temperature_threshold(TemperatureThreshold::Slowdown)
                    .unwrap_or(DEFAULT_MAX_TEMPERATURE_C);
                if t >= limit {
                    return Err(format!(
                        "GPU {i} is at {t} °C, at or over its {limit} °C slowdown point"
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn samples(&self) -> Vec<Sample> {
        let Ok(nvml) = &self.nvml else {
            return Vec::new();
        };
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|i| {
                let d = nvml.device_by_index(i).ok()?;
                let mem = d.memory_info().ok();
                Some(Sample {
                    index: i,
                    utilization_percent: d.utilization_rates().map(|u| u.gpu).unwrap_or(0),
                    memory_used_mib: mem.as_ref().map_or(0, |m| m.used / (1024 * 1024)),
                    memory_total_mib: mem.map_or(0, |m| m.total / (1024 * 1024)),
                    temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
                })
            })
            .collect()
    }
}

impl Probe {
    /// Compute and graphics processes on every GPU, with their memory and, where the driver
    /// keeps it, their utilisation.
    pub fn processes(&self) -> Result<Vec<ProcessUse>, String> {
        let nvml = self.nvml.as_ref().map_err(Clone::clone)?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML cannot count the GPUs: {e}"))?;
        let mut out = Vec::new();
        for i in 0..count {
            let d = nvml
                .device_by_index(i)
                .map_err(|e| format!("GPU {i}: {e}"))?;
            let mut procs = d
                .running_compute_processes()
                .map_err(|e| format!("GPU {i}: NVML lists no processes: {e}"))?;
            procs.extend(d.running_graphics_processes().unwrap_or_default());
            // Utilisation per process is optional (not every GPU or driver keeps it).
            let utils = d.process_utilization_stats(None).unwrap_or_default();
            for p in procs {
                let memory_mib = match p.used_gpu_memory {
                    nvml_wrapper::enums::device::UsedGpuMemory::Used(b) => Some(b / (1024 * 1024)),
                    nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => None,
                };
                let sm_percent = utils
                    .iter()
                    .filter(|u| u.pid == p.pid)
                    .map(|u| u.sm_util)
                    .max();
                out.push(ProcessUse {
                    pid: p.pid,
                    gpu: i,
                    memory_mib,
                    sm_percent,
                });
            }
            let mut listed: Vec<u32> = out.iter().filter(|p| p.gpu == i).map(|p| p.pid).collect();
            for u in &utils {
                if listed.contains(&u.pid) {
                    continue;
                }
                listed.push(u.pid);
                let sm_percent = utils
                    .iter()
                    .filter(|v| v.pid == u.pid)
                    .map(|v| v.sm_util)
                    .max();
                out.push(ProcessUse {
                    pid: u.pid,
                    gpu: i,
                    memory_mib: None,
                    sm_percent,
                });
            }
        }
        Ok(out)
    }
}

impl Inventory {
    /// The report's GPU facts.
    pub fn report(&self) -> Option<janitor_model::report::GpuInfo> {
        let first = self.devices.first()?;
        Some(janitor_model::report::GpuInfo {
            count: self.count,
            model: Some(first.name.clone()),
            driver: self.driver_version.clone(),
            memory_mib: Some(first.memory_total_mib),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_nvml_means_no_gpu() {
        let p = super::Probe::none("NVML is not available: test");
        let inv = p.inventory();
        assert_eq!(inv.count, 0);
        assert_eq!(
            inv.unavailable.as_deref(),
            Some("NVML is not available: test")
        );
        assert!(inv.report().is_none());
        assert_eq!(p.check(0), Err("NVML is not available: test".to_string()));
        assert!(p.samples().is_empty());
        assert_eq!(
            p.processes(),
            Err("NVML is not available: test".to_string())
        );
    }
}
