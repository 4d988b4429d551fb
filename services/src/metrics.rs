//! Job metrics for CloudWatch: the `Metrics` trait and its implementation as embedded-metric-format
//! (EMF) log events, which CloudWatch turns into metrics without a PutMetricData permission.

use std::future::Future;

use crate::error::ServiceError;
use crate::logs::{Event, LogApi};

/// The metric namespace.
pub const NAMESPACE: &str = "Janitor";

/// A finished job's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct JobMetric {
    pub status: String,
    pub duration_seconds: f64,
    pub queue_wait_seconds: f64,
    pub cache_hits: u32,
    pub cache_steps: u32,
    pub timestamp_ms: i64,
}

/// Where job metrics go.
pub trait Metrics: Send + Sync {
    fn job_finished(&self, m: &JobMetric) -> impl Future<Output = Result<(), ServiceError>> + Send;
}

/// No metrics (local runs, tests that do not look at them).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMetrics;

impl Metrics for NoMetrics {
    async fn job_finished(&self, _m: &JobMetric) -> Result<(), ServiceError> {
        Ok(())
    }
}

/// EMF events in `{group}/{stream}` (the daemon uses `{instance-id}/metrics`).
pub struct EmfMetrics<L: LogApi> {
    pub api: L,
    pub group: String,
    pub stream: String,
    /// Set once the stream exists, so each job costs one call.
    pub created: std::sync::atomic::AtomicBool,
}

impl<L: LogApi> EmfMetrics<L> {
    pub fn new(api: L, group: String, stream: String) -> Self {
        EmfMetrics {
            api,
            group,
            stream,
            created: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// The EMF document for one job: `Jobs`, `JobDuration`, `QueueWait`, `CacheHits`, `CacheSteps`
/// by `Status`.
pub fn emf(m: &JobMetric) -> serde_json::Value {
    serde_json::json!({
        "_aws": {
            "Timestamp": m.timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Status"], []],
                "Metrics": [
                    {"Name": "Jobs", "Unit": "Count"},
                    {"Name": "JobDuration", "Unit": "Seconds"},
                    {"Name": "QueueWait", "Unit": "Seconds"},
                    {"Name": "CacheHits", "Unit": "Count"},
                    {"Name": "CacheSteps", "Unit": "Count"},
                ],
            }],
        },
        "Status": m.status,
        "Jobs": 1,
        "JobDuration": m.duration_seconds,
        "QueueWait": m.queue_wait_seconds,
        "CacheHits": m.cache_hits,
        "CacheSteps": m.cache_steps,
    })
}

impl<L: LogApi> Metrics for EmfMetrics<L> {
    async fn job_finished(&self, m: &JobMetric) -> Result<(), ServiceError> {
        use std::sync::atomic::Ordering;
        if !self.created.load(Ordering::Relaxed) {
            self.api.create_stream(&self.group, &self.stream).await?;
            self.created.store(true, Ordering::Relaxed);
        }
        let event = Event {
            timestamp_ms: m.timestamp_ms,
            message: emf(m).to_string(),
            step: 0,
        };
        self.api
            .put_events(&self.group, &self.stream, &[event])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_names_every_metric_it_carries() {
        let v = emf(&JobMetric {
            status: "failed".into(),
            duration_seconds: 12.5,
            queue_wait_seconds: 1.0,
            cache_hits: 3,
            cache_steps: 4,
            timestamp_ms: 1,
        });
        let declared: Vec<&str> = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in &declared {
            assert!(v.get(*name).is_some(), "{name} is declared but not set");
        }
        assert_eq!(v["Status"], "failed");
        assert_eq!(v["JobDuration"], 12.5);
    }

    #[derive(Clone)]
    struct Down;

    impl LogApi for Down {
        async fn create_stream(&self, g: &str, s: &str) -> Result<(), ServiceError> {
            Err(ServiceError::new(
                "CloudWatch Logs",
                "CreateLogStream",
                format!("{g}/{s}"),
                crate::error::ErrorKind::Unavailable,
                "connection refused on cue",
            ))
        }
        async fn put_events(&self, _g: &str, _s: &str, _e: &[Event]) -> Result<(), ServiceError> {
            unreachable!("no put without a stream")
        }
    }

    #[tokio::test]
    async fn a_log_service_outage_is_an_error_the_caller_can_retry() {
        let m = EmfMetrics::new(Down, "g".into(), "i-1/metrics".into());
        let e = m
            .job_finished(&JobMetric {
                status: "succeeded".into(),
                duration_seconds: 1.0,
                queue_wait_seconds: 0.0,
                cache_hits: 0,
                cache_steps: 0,
                timestamp_ms: 1,
            })
            .await
            .unwrap_err();
        assert!(e.retryable());
        assert_eq!(e.action, "CreateLogStream");
    }
}
