//! The instance metadata service (IMDSv2): the `Metadata` trait, its real client, the instance's
//! identity, and the watcher that reports lifecycle target-state changes and spot notices.

use std::future::Future;
use std::time::Duration;

use janitor_model::report::InstanceInfo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{describe, ErrorKind, ServiceError};

/// What the watcher reports, only when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Target(String),
    Spot(String),
    /// The first read answered (whatever the state): from here on the lifecycle state is known.
    FirstRead,
}

/// After this many failed IMDS reads in a row, a failure is logged again (1 in N).
const IMDS_LOG_EVERY: u32 = 12;

/// Reads instance metadata paths (under `/latest/meta-data/`).
pub trait Metadata: Send + Sync + Clone + 'static {
    /// `Ok(None)` when the path does not exist (404): no spot notice, no lifecycle state.
    fn get(&self, path: &str) -> impl Future<Output = Result<Option<String>, ServiceError>> + Send;
}

/// IMDSv2 through the SDK's client (`AWS_EC2_METADATA_SERVICE_ENDPOINT` is honoured).
#[derive(Clone)]
pub struct Imds {
    client: aws_config::imds::Client,
}

impl Imds {
    pub fn new(max_attempts: u32) -> Imds {
        Imds {
            client: aws_config::imds::Client::builder()
                .max_attempts(max_attempts)
                .connect_timeout(Duration::from_secs(1))
                .read_timeout(Duration::from_secs(2))
                .build(),
        }
    }
}

impl Metadata for Imds {
    async fn get(&self, path: &str) -> Result<Option<String>, ServiceError> {
        use aws_config::imds::client::error::ImdsError;
        match self.client.get(format!("/latest/meta-data/{path}")).await {
            Ok(v) => Ok(Some(v.as_ref().trim().to_string())),
            Err(ImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => Ok(None),
            Err(e) => {
                let kind = match &e {
                    ImdsError::ErrorResponse(r) if r.response().status().as_u16() < 500 => {
                        ErrorKind::Rejected
                    }
                    _ => ErrorKind::Unavailable,
                };
                Err(ServiceError::new("IMDS", "GET", path, kind, describe(e)))
            }
        }
    }
}

/// Reads the instance's identity.
pub async fn instance_identity<M: Metadata>(meta: &M) -> Result<InstanceInfo, ServiceError> {
    let get = |path: &'static str| async move {
        meta.get(path).await?.ok_or_else(|| {
            ServiceError::new("IMDS", "GET", path, ErrorKind::NotFound, "no such metadata; set AWS_EC2_METADATA_SERVICE_ENDPOINT or JANITOR_INSTANCE_ID off EC2")
        })
    };
    let id = get("instance-id").await?;
    let instance_type = get("instance-type").await?;
    let availability_zone = get("placement/availability-zone").await?;
    // Absent on some instance kinds; on-demand is what it means then.
    let lifecycle = get("instance-life-cycle")
        .await
        .unwrap_or_else(|_| "on-demand".to_string());
    Ok(InstanceInfo {
        id,
        instance_type,
        availability_zone,
        lifecycle,
    })
}

/// Polls the metadata every `every` until `stop`; errors are retried on the next turn, never
/// fatal, and logged at a bounded rate.
pub fn watch<M: Metadata>(
    meta: M,
    every: Duration,
    tx: mpsc::Sender<Notice>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_target: Option<String> = None;
        let mut spot_seen = false;
        let mut rebalance_seen = false;
        let mut first_read = true;
        let mut failures: u32 = 0;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let target = meta.get("autoscaling/target-lifecycle-state").await;
            let spot = meta.get("spot/instance-action").await;
            let rebalance = meta.get("events/recommendations/rebalance").await;
            match (&target, &spot) {
                (Err(e), _) | (_, Err(e)) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(IMDS_LOG_EVERY) {
                        tracing::warn!(error = %e, failures, "instance metadata could not be read; retrying");
                    }
                    continue;
                }
                _ => {
                    if failures > 0 {
                        tracing::info!(failures, "instance metadata answers again");
                    }
                    failures = 0;
                }
            }
            if let Ok(Some(t)) = target {
                if last_target.as_deref() != Some(t.as_str()) {
                    tracing::info!(target_lifecycle_state = %t, "lifecycle target state");
                    last_target = Some(t.clone());
                    if tx.send(Notice::Target(t)).await.is_err() {
                        return;
                    }
                }
            }
            if first_read {
                first_read = false;
                if tx.send(Notice::FirstRead).await.is_err() {
                    return;
                }
            }
            if let Ok(Some(action)) = spot {
                if !spot_seen {
                    spot_seen = true;
                    tracing::warn!(notice = %action, "spot interruption notice");
                    if tx.send(Notice::Spot(action)).await.is_err() {
                        return;
                    }
                }
            }
            if let Ok(Some(r)) = rebalance {
                if !rebalance_seen {
                    rebalance_seen = true;
                    tracing::warn!(recommendation = %r, "EC2 recommends rebalancing: this spot instance is at elevated risk of interruption");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// Answers from a table; `None` in the table means "fail with 5xx".
    #[derive(Clone, Default)]
    struct Table(Arc<Mutex<HashMap<String, Option<String>>>>);

    impl Table {
        fn set(&self, path: &str, v: Option<&str>) {
            self.0
                .lock()
                .unwrap()
                .insert(path.to_string(), v.map(str::to_string));
        }
    }

    impl Metadata for Table {
        async fn get(&self, path: &str) -> Result<Option<String>, ServiceError> {
            match self.0.lock().unwrap().get(path) {
                None => Ok(None),
                Some(Some(v)) => Ok(Some(v.clone())),
                Some(None) => Err(ServiceError::new(
                    "IMDS",
                    "GET",
                    path,
                    ErrorKind::Unavailable,
                    "HTTP 500 on cue",
                )),
            }
        }
    }

    #[tokio::test]
    async fn failures_are_not_notices_and_changes_are_reported_once() {
        let meta = Table::default();
        meta.set("autoscaling/target-lifecycle-state", None);
        let (tx, mut rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = watch(meta.clone(), Duration::from_millis(10), tx, stop.clone());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(rx.try_recv().is_err(), "a failing IMDS reports nothing");
        meta.set("autoscaling/target-lifecycle-state", Some("InService"));
        let first = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert_eq!(first.unwrap(), Some(Notice::Target("InService".into())));
        let known = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert_eq!(
            known.unwrap(),
            Some(Notice::FirstRead),
            "then: the state is known"
        );
        meta.set("spot/instance-action", Some("{\"action\":\"terminate\"}"));
        let spot = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert!(matches!(spot.unwrap(), Some(Notice::Spot(_))));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(
            rx.try_recv().is_err(),
            "unchanged values are not reported again"
        );
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn identity_names_the_missing_path() {
        let meta = Table::default();
        meta.set("instance-id", Some("i-1"));
        let e = instance_identity(&meta).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.target, "instance-type");
    }
}
