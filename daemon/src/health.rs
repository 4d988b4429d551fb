//! `/health` (JSON) and `/metrics` (Prometheus text) on loopback, for an operator in an SSM
//! session or a port forward. The loop updates a shared `Status`; the server only reads it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::gpu::{Inventory, Probe, Sample};
use crate::hygiene::{Cleanup, DiskStats};

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
            disk: crate::hygiene::disk(cache_dir),
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

pub type Shared = Arc<Mutex<Status>>;

/// Serves until `stop`. Only loopback addresses are accepted by the settings.
pub async fn serve(
    addr: SocketAddr,
    status: Shared,
    gpu: Arc<Probe>,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "health and metrics endpoint listening");
    Ok(tokio::spawn(async move {
        // Without it, /metrics simply reports zero CPU and memory for the process.
        let sys = Arc::new(Mutex::new(sysinfo::System::new().ok()));
        loop {
            let (mut sock, _) = tokio::select! {
                () = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "health endpoint accept failed");
                        continue;
                    }
                },
            };
            let (status, gpu, sys) = (status.clone(), gpu.clone(), sys.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while n < buf.len() {
                    match tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        sock.read(&mut buf[n..]),
                    )
                    .await
                    {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                        Ok(Ok(k)) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request
                    .lines()
                    .next()
                    .and_then(|l| l.strip_prefix("GET "))
                    .and_then(|l| l.split(' ').next())
                    .unwrap_or("");
                let snapshot = snapshot(&status, &gpu, &sys);
                let (code, ctype, body) = match path {
                    "/health" => (
                        "200 OK",
                        "application/json",
                        serde_json::to_string_pretty(&snapshot).unwrap_or_default(),
                    ),
                    "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics(&snapshot)),
                    _ => (
                        "404 Not Found",
                        "text/plain",
                        "try /health or /metrics\n".to_string(),
                    ),
                };
                let head = format!("HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    }))
}

/// The status with live figures: GPU samples and this process's CPU and memory.
fn snapshot(status: &Shared, gpu: &Probe, sys: &Mutex<Option<sysinfo::System>>) -> Status {
    let mut s = match status.lock() {
        Ok(s) => s.clone(),
        Err(p) => p.into_inner().clone(),
    };
    s.gpu_samples = gpu.samples();
    if let Ok(mut guard) = sys.lock() {
        let Some(sys) = guard.as_mut() else { return s };
        let pid = sysinfo::Pid::from_u32(std::process::id());
        sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
        if let Some(p) = sys.process(pid) {
            s.process = Process {
                cpu_percent: p.cpu_usage(),
                resident_bytes: p.memory(),
            };
        }
    }
    s
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition (version 0.0.4).
pub fn metrics(s: &Status) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    let busy = u8::from(s.current_job.is_some());
    metric(
        "janitor_up",
        "gauge",
        "1 while janitord runs.",
        one("1".into()),
    );
    metric(
        "janitor_busy",
        "gauge",
        "1 while a job runs.",
        one(busy.to_string()),
    );
    metric(
        "janitor_healthy",
        "gauge",
        "0 once the instance marked itself unhealthy.",
        one(u8::from(s.unhealthy.is_none()).to_string()),
    );
    let statuses = [
        "succeeded",
        "failed",
        "timed_out",
        "interrupted",
        "rejected",
    ];
    metric(
        "janitor_jobs_total",
        "counter",
        "Jobs finished on this instance, by final status.",
        statuses
            .iter()
            .map(|st| {
                (
                    format!("{{status=\"{st}\"}}"),
                    s.jobs_by_status.get(*st).copied().unwrap_or(0).to_string(),
                )
            })
            .collect(),
    );
    for (name, help, h) in [
        (
            "janitor_job_duration_seconds",
            "Job durations, clone to report.",
            &s.job_duration_seconds,
        ),
        (
            "janitor_queue_wait_seconds",
            "Time from enqueue to the job's start.",
            &s.queue_wait_seconds,
        ),
    ] {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (i, b) in BUCKETS.iter().enumerate() {
            out.push_str(&format!(
                "{name}_bucket{{le=\"{b}\"}} {}\n",
                h.counts.get(i).copied().unwrap_or(0)
            ));
        }
        out.push_str(&format!(
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}\n",
            h.count, h.sum, h.count
        ));
    }
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    let dir = format!("{{dir=\"{}\"}}", esc(&s.cache.dir));
    metric(
        "janitor_cache_bytes",
        "gauge",
        "Bytes the layer cache uses.",
        vec![(dir.clone(), s.cache.used_bytes.to_string())],
    );
    metric(
        "janitor_cache_capacity_bytes",
        "gauge",
        "Bytes the cache is budgeted against.",
        vec![(dir.clone(), s.cache.capacity_bytes.to_string())],
    );
    metric(
        "janitor_cache_evictions_total",
        "counter",
        "Images evicted from the layer cache.",
        one(s.cache.evicted_total.to_string()),
    );
    if let Some(d) = s.disk {
        metric(
            "janitor_disk_free_bytes",
            "gauge",
            "Free bytes on the cache volume.",
            vec![(dir.clone(), d.free_bytes.to_string())],
        );
        metric(
            "janitor_disk_free_inodes",
            "gauge",
            "Free inodes on the cache volume.",
            vec![(dir, d.free_inodes.to_string())],
        );
    }
    metric(
        "janitor_gpus",
        "gauge",
        "GPUs NVML sees.",
        one(s.gpus.count.to_string()),
    );
    let gpu = |f: &dyn Fn(&Sample) -> String| {
        s.gpu_samples
            .iter()
            .map(|g| (format!("{{gpu=\"{}\"}}", g.index), f(g)))
            .collect::<Vec<_>>()
    };
    metric(
        "janitor_gpu_utilization_percent",
        "gauge",
        "GPU utilisation.",
        gpu(&|g| g.utilization_percent.to_string()),
    );
    metric(
        "janitor_gpu_memory_used_bytes",
        "gauge",
        "GPU memory in use.",
        gpu(&|g| (g.memory_used_mib * 1024 * 1024).to_string()),
    );
    metric(
        "janitor_gpu_memory_total_bytes",
        "gauge",
        "GPU memory.",
        gpu(&|g| (g.memory_total_mib * 1024 * 1024).to_string()),
    );
    metric(
        "janitor_process_cpu_percent",
        "gauge",
        "janitord's CPU use, percent of one core.",
        one(format!("{:.2}", s.process.cpu_percent)),
    );
    metric(
        "janitor_process_resident_memory_bytes",
        "gauge",
        "janitord's resident memory.",
        one(s.process.resident_bytes.to_string()),
    );
    out
}

/// A plain-text summary of `/health` for a person (`janitord status`).
pub fn describe(v: &serde_json::Value) -> String {
    let mut out = String::new();
    let s = |p: &str| {
        v.pointer(p)
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .unwrap_or_else(|| "-".into())
    };
    out.push_str(&format!(
        "janitord {} on {}: {}\n",
        s("/version"),
        s("/instance_id"),
        s("/state")
    ));
    if let Some(j) = v.get("current_job").filter(|j| !j.is_null()) {
        out.push_str(&format!(
            "job:       {} ({}) since {}\n",
            j["job_id"].as_str().unwrap_or("?"),
            j["repository"].as_str().unwrap_or("?"),
            j["started_at"].as_str().unwrap_or("?")
        ));
    } else {
        out.push_str("job:       none\n");
    }
    out.push_str(&format!("last poll: {}\n", s("/last_successful_poll")));
    if let Some(u) = v.get("unhealthy").and_then(|u| u.as_str()) {
        out.push_str(&format!("UNHEALTHY: {u}\n"));
    }
    let gib = |p: &str| {
        v.pointer(p)
            .and_then(serde_json::Value::as_u64)
            .map_or("-".to_string(), |b| {
                format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
            })
    };
    out.push_str(&format!(
        "disk:      {} free of {}, {} inodes free\n",
        gib("/disk/free_bytes"),
        gib("/disk/total_bytes"),
        s("/disk/free_inodes")
    ));
    out.push_str(&format!(
        "cache:     {} used of {} ({}, own volume: {}), {} evicted so far\n",
        gib("/cache/used_bytes"),
        gib("/cache/capacity_bytes"),
        s("/cache/dir"),
        s("/cache/own_volume"),
        s("/cache/evicted_total")
    ));
    match v.pointer("/gpus/count").and_then(serde_json::Value::as_u64) {
        Some(0) | None => out.push_str(&format!("gpus:      none ({})\n", s("/gpus/unavailable"))),
        Some(n) => out.push_str(&format!(
            "gpus:      {n} × {} (driver {}, CUDA {})\n",
            s("/gpus/devices/0/name"),
            s("/gpus/driver_version"),
            s("/gpus/cuda_version")
        )),
    }
    out.push_str(&format!(
        "jobs:      {}\n",
        v.get("jobs_by_status")
            .map_or_else(|| "{}".to_string(), ToString::to_string)
    ));
    out.push_str(&format!(
        "process:   {}% CPU, {}\n",
        s("/process/cpu_percent"),
        gib("/process/resident_bytes")
    ));
    out
}

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
