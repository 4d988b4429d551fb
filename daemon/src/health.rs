//! `/health` (JSON) and `/metrics` (Prometheus text) on loopback, for an operator in an SSM
//! session or a port forward, and the text `janitord status` prints. The server only reads the
//! shared status.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use janitor_services::gpu::{GpuProbe, Sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::status::{Process, Shared, Status, BUCKETS};

/// Serves until `stop`. Only loopback addresses are accepted by the settings.
pub async fn serve(
    addr: SocketAddr,
    status: Shared,
    gpu: Arc<dyn GpuProbe>,
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
                let snapshot = snapshot(&status, gpu.as_ref(), &sys);
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
fn snapshot(status: &Shared, gpu: &dyn GpuProbe, sys: &Mutex<Option<sysinfo::System>>) -> Status {
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
    match v
        .get("unsettled_reports")
        .and_then(serde_json::Value::as_u64)
    {
        Some(0) | None => {}
        Some(n) => out.push_str(&format!(
            "UNSETTLED: {n} report(s) waiting for the store; no new job until they are stored\n"
        )),
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
    fn status_text_says_when_reports_are_unsettled_and_unhealthy() {
        let busy = serde_json::json!({
            "instance_id": "i-1", "version": "0", "state": "Idle { since: 3 }",
            "unsettled_reports": 2, "unhealthy": "disk full",
        });
        let text = describe(&busy);
        assert!(
            text.contains(
                "UNSETTLED: 2 report(s) waiting for the store; no new job until they are stored"
            ),
            "{text}"
        );
        assert!(text.contains("UNHEALTHY: disk full"), "{text}");
        let calm =
            serde_json::json!({"instance_id": "i-1", "state": "Idle", "unsettled_reports": 0});
        assert!(!describe(&calm).contains("UNSETTLED"));
    }
}
