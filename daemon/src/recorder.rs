//! The ledger records the daemon writes besides reports: started, rejected, handed back,
//! crashed and instance events. Every key comes from `janitor_model::ledger`; a record that
//! cannot be written is logged with its key and cause, and never stops the daemon.

use janitor_model::job::{Job, Rejection};
use janitor_model::ledger::{self, InstanceEvent, RejectedRecord, StartedRecord};
use janitor_model::report::InstanceInfo;
use janitor_services::aws::{self, Received, ReportStore};
use serde::Serialize;
use time::OffsetDateTime;

/// Writes ledger records for one instance.
#[derive(Clone)]
pub struct Recorder<S> {
    pub store: S,
    pub instance: InstanceInfo,
}

impl<S: ReportStore> Recorder<S> {
    /// Writes one record, with bounded retries.
    pub async fn put<T: Serialize>(&self, key: &str, value: &T) {
        let body = match serde_json::to_vec_pretty(value) {
            Ok(b) => b,
            Err(e) => {
                return tracing::error!(key, error = %e, "ledger record could not be serialised")
            }
        };
        if let Err(e) = aws::put_with_retries(&self.store, key, &body).await {
            tracing::error!(key, error = %e, retryable = e.retryable(), "could not write a ledger record");
        }
    }

    /// `instances/{id}/{time}-{event}.json`: the cost trail.
    pub async fn instance_event(&self, event: &str, detail: &str) {
        let at = OffsetDateTime::now_utc();
        let record = InstanceEvent {
            event: event.to_string(),
            instance: self.instance.clone(),
            at,
            detail: detail.to_string(),
        };
        self.put(
            &ledger::instance_event_key(&self.instance.id, at, event),
            &record,
        )
        .await;
    }

    /// `started-{attempt}.json` when a job is taken.
    pub async fn started(&self, job: &Job, attempt: u32) {
        let started = StartedRecord {
            job_id: job.job_id.clone(),
            run_id: job.run_id.clone(),
            attempt,
            instance: self.instance.clone(),
            started_at: OffsetDateTime::now_utc(),
        };
        self.put(
            &ledger::started_key(&job.run_id, &job.job_id, attempt),
            &started,
        )
        .await;
    }

    /// A refused message, by day and message id, outside `runs/`: its run id is unverified.
    pub async fn rejected(&self, message: &Received, rejection: &Rejection) {
        let at = OffsetDateTime::now_utc();
        let record = RejectedRecord {
            message_id: message.message_id.clone(),
            run_id: rejection.run_id.clone(),
            job_id: rejection.job_id.clone(),
            reason: rejection.reason.clone(),
            receive_count: message.receive_count,
            instance_id: self.instance.id.clone(),
            at,
            body_head: message.body.chars().take(4096).collect(),
        };
        self.put(&ledger::rejected_key(at, &message.message_id), &record)
            .await;
    }

    /// A GPU job this instance could not take.
    pub async fn handed_back(&self, message: &Received, job: &Job, reason: &str) {
        let record = serde_json::json!({
            "job_id": job.job_id,
            "run_id": job.run_id,
            "attempt": message.receive_count,
            "instance": self.instance,
            "reason": format!("no usable GPU: {reason}"),
        });
        let key = ledger::handed_back_key(&job.run_id, &job.job_id, message.receive_count);
        self.put(&key, &record).await;
    }

    /// An attempt an earlier daemon on this instance left unfinished.
    pub async fn crashed(&self, run_id: &str, job_id: &str, attempt: &str, container: &str) {
        let record = serde_json::json!({
            "job_id": job_id,
            "run_id": run_id,
            "attempt": attempt,
            "container": container,
            "instance": self.instance,
            "found_at": OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "detail": "janitord stopped without finishing this attempt; the job comes back through the queue",
        });
        self.put(&ledger::crashed_key(run_id, job_id, attempt), &record)
            .await;
    }
}
