//! The daemon's loop: take one message at a time, run its job, store the report, then delete
//! the message. Results are spooled to disk before upload so none is lost in between.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use janitor_model::job::{self, Rejection};
use janitor_model::ledger::{self, InstanceEvent, RejectedRecord, StartedRecord};
use janitor_model::report::{InstanceInfo, JobIdentity, JobStatus, LogRef, Report};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::{self, JobQueue, Received, ReportStore};
use crate::backoff::Backoff;
use crate::docker::Engine;
use crate::logs::{CloudWatchShipper, LogSink};
use crate::pipeline::{self, JobContext};
use crate::settings::Settings;

/// How long the daemon waits for a job's output to reach CloudWatch after the job ends.
pub const LOG_FLUSH_LIMIT: Duration = Duration::from_secs(15);
/// First delay after a failed SQS receive.
pub const SQS_RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest delay between failed SQS receives.
pub const SQS_RETRY_CAP: Duration = Duration::from_secs(30);

/// A report waiting in the spool for its upload, with what is needed to settle the message.
#[derive(Debug, Serialize, Deserialize)]
struct Spooled {
    receipt_handle: String,
    report: Report,
}

pub struct Daemon<Q, S> {
    pub settings: Settings,
    pub queue: Q,
    pub store: S,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub engine: Engine,
    pub instance: InstanceInfo,
    /// Cancelled on SIGTERM/SIGINT: the running job is stopped and handed back.
    pub shutdown: CancellationToken,
}

impl<Q: JobQueue + Clone + 'static, S: ReportStore + Clone + 'static> Daemon<Q, S> {
    /// Runs until shutdown (or, with `exit_when_idle`, until the queue is empty).
    pub async fn run(&self) {
        self.record_instance_event("daemon-start", "janitord started and is polling the queue")
            .await;
        let mut backoff = Backoff::new(SQS_RETRY_BASE, SQS_RETRY_CAP);
        loop {
            self.drain_spool().await;
            if self.shutdown.is_cancelled() {
                break;
            }
            let received = tokio::select! {
                r = self.queue.receive(self.settings.poll_wait, self.settings.visibility_timeout) => r,
                () = self.shutdown.cancelled() => break,
            };
            match received {
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "could not poll the queue");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shutdown.cancelled() => break,
                    }
                }
                Ok(None) => {
                    backoff = Backoff::new(SQS_RETRY_BASE, SQS_RETRY_CAP);
                    if self.settings.exit_when_idle && self.queue_is_empty().await {
                        tracing::info!("queue is empty; exiting as asked (--exit-when-idle)");
                        break;
                    }
                }
                Ok(Some(message)) => {
                    backoff = Backoff::new(SQS_RETRY_BASE, SQS_RETRY_CAP);
                    self.handle(message).await;
                }
            }
        }
        self.record_instance_event("daemon-stop", "janitord stopped")
            .await;
    }

    async fn queue_is_empty(&self) -> bool {
        match self.queue.depth().await {
            Ok((0, 0)) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the queue depth");
                false
            }
        }
    }

    async fn handle(&self, message: Received) {
        let received_at = Instant::now();
        let job = match job::decode(&message.body, self.settings.allow_local_repos) {
            Ok(job) => job,
            Err(rejection) => return self.reject(&message, rejection).await,
        };
        let attempt = message.receive_count;
        let span = tracing::info_span!("job", job_id = %job.job_id, run_id = %job.run_id, repo = %job.spec.repo.full_name(), attempt);
        let _enter = span.enter();
        tracing::info!("job taken");
        let started = StartedRecord {
            job_id: job.job_id.clone(),
            run_id: job.run_id.clone(),
            attempt,
            instance: self.instance.clone(),
            started_at: OffsetDateTime::now_utc(),
        };
        self.put_record(
            &ledger::started_key(&job.run_id, &job.job_id, attempt),
            &started,
        )
        .await;

        let log_ref = LogRef {
            group: self.settings.log_group.clone(),
            stream: format!("{}/{}", self.instance.id, job.job_id),
        };
        let shipper = CloudWatchShipper::start(
            self.logs.clone(),
            log_ref.group.clone(),
            log_ref.stream.clone(),
        );
        let keepalive = self.keep_visible(message.receipt_handle.clone());
        let ctx = JobContext {
            job: job.clone(),
            attempt,
            instance: self.instance.clone(),
            work_root: self.settings.work_root(),
            stop_grace: self.settings.stop_grace,
            allow_local_repos: self.settings.allow_local_repos,
            log_ref: Some(log_ref),
        };
        let setup_ms = received_at.elapsed().as_millis() as u64;
        // The job runs in its own task: a panic in it becomes a failed report, not a dead daemon.
        let task = {
            let engine = self.engine.clone();
            let ctx = ctx.clone();
            let sink: Arc<dyn LogSink> = shipper.sink();
            let cancel = self.shutdown.child_token();
            tokio::spawn(
                async move { pipeline::run_job(&engine, &ctx, sink.as_ref(), &cancel).await },
            )
        };
        let report = match task.await {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(error = %e, "the job task failed; recording the job as failed");
                bare_report(
                    &ctx,
                    JobStatus::Failed,
                    format!("janitord could not finish the job: {e}"),
                )
            }
        };
        let ended = Instant::now();
        let stats = shipper.finish(LOG_FLUSH_LIMIT).await;
        keepalive.cancel();
        self.settle(&message.receipt_handle, report.clone()).await;
        tracing::info!(
            status = report.status.as_str(),
            duration_s = report.timings.duration_seconds,
            log_lines = stats.sent,
            log_lines_dropped = stats.dropped,
            log_lines_failed = stats.failed,
            setup_ms,
            report_ms = ended.elapsed().as_millis() as u64,
            "job finished"
        );
    }

    /// Renews the message's visibility every third of the timeout until cancelled.
    fn keep_visible(&self, receipt: String) -> CancellationToken {
        let token = CancellationToken::new();
        let queue = self.queue.clone();
        let visibility = self.settings.visibility_timeout;
        let stop = token.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(visibility / 3);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = queue.set_visibility(&receipt, visibility).await {
                            tracing::warn!(error = %e, "could not extend the message's visibility; another instance may take the job");
                        }
                    }
                }
            }
        });
        token
    }

    /// Spools the report, uploads it, then deletes the message (or, for an interrupted job,
    /// hands it back at once). A failed upload leaves the spooled copy for the next loop.
    async fn settle(&self, receipt: &str, report: Report) {
        let spooled = Spooled {
            receipt_handle: receipt.to_string(),
            report,
        };
        let path = self.settings.spool_dir().join(format!(
            "{}-{}.json",
            spooled.report.job_id, spooled.report.attempt
        ));
        if let Err(e) = write_spool(&path, &spooled) {
            tracing::error!(path = %path.display(), error = %e, "could not spool the report; uploading without a local copy");
        }
        if self.upload(&spooled).await {
            let _ = std::fs::remove_file(&path);
        }
    }

    async fn upload(&self, spooled: &Spooled) -> bool {
        let report = &spooled.report;
        let body = match serde_json::to_vec_pretty(report) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "report could not be serialised");
                return false;
            }
        };
        let keys = [
            ledger::report_key(&report.run_id, &report.job_id),
            ledger::repo_history_key(
                &report.repo.organization,
                &report.repo.name,
                report.timings.finished_at,
                &report.job_id,
            ),
        ];
        for key in &keys {
            if let Err(e) = aws::put_with_retries(&self.store, key, &body).await {
                tracing::error!(error = %e, "report upload failed; it stays in the spool and the message stays on the queue");
                return false;
            }
        }
        let settled = if report.status == JobStatus::Interrupted {
            self.queue
                .set_visibility(&spooled.receipt_handle, Duration::ZERO)
                .await
        } else {
            self.queue.delete(&spooled.receipt_handle).await
        };
        if let Err(e) = settled {
            // The report is stored; a later attempt of the same job overwrites it.
            tracing::warn!(error = %e, "report stored but the message could not be settled; the job may run again");
        }
        true
    }

    /// Uploads reports left in the spool by a failed upload or a crash.
    async fn drain_spool(&self) {
        let dir = self.settings.spool_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path).map(|b| serde_json::from_slice::<Spooled>(&b)) {
                Ok(Ok(spooled)) => {
                    tracing::info!(path = %path.display(), job_id = %spooled.report.job_id, "uploading a spooled report");
                    if self.upload(&spooled).await {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(path = %path.display(), error = %e, "spooled report is unreadable; moving it aside");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read spooled report")
                }
            }
        }
    }

    async fn reject(&self, message: &Received, rejection: Rejection) {
        tracing::warn!(message_id = %message.message_id, receive_count = message.receive_count, reason = %rejection.reason, "message rejected; it goes to the dead-letter queue after the queue's maxReceiveCount");
        let record = RejectedRecord {
            message_id: message.message_id.clone(),
            reason: rejection.reason.clone(),
            receive_count: message.receive_count,
            instance_id: self.instance.id.clone(),
            at: OffsetDateTime::now_utc(),
            body_head: message.body.chars().take(4096).collect(),
        };
        self.put_record(&ledger::rejected_key(&message.message_id), &record)
            .await;
        if let (Some(run_id), Some(job_id)) = (&rejection.run_id, &rejection.job_id) {
            self.put_record(
                &format!("{}jobs/{job_id}/rejected.json", ledger::run_prefix(run_id)),
                &record,
            )
            .await;
        }
        if let Err(e) = self
            .queue
            .set_visibility(&message.receipt_handle, self.settings.reject_retry)
            .await
        {
            tracing::warn!(error = %e, "could not hand the rejected message back");
        }
    }

    async fn record_instance_event(&self, event: &str, detail: &str) {
        let at = OffsetDateTime::now_utc();
        let record = InstanceEvent {
            event: event.to_string(),
            instance: self.instance.clone(),
            at,
            detail: detail.to_string(),
        };
        self.put_record(
            &ledger::instance_event_key(&self.instance.id, at, event),
            &record,
        )
        .await;
    }

    async fn put_record<T: Serialize>(&self, key: &str, value: &T) {
        let body = match serde_json::to_vec_pretty(value) {
            Ok(b) => b,
            Err(e) => {
                return tracing::error!(key, error = %e, "ledger record could not be serialised")
            }
        };
        if let Err(e) = aws::put_with_retries(&self.store, key, &body).await {
            tracing::error!(key, error = %e, "could not write a ledger record");
        }
    }
}

fn write_spool(path: &Path, spooled: &Spooled) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp: PathBuf = path.with_extension("tmp");
    let body = serde_json::to_vec(spooled).map_err(std::io::Error::other)?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// A report for a job whose pipeline could not produce one.
pub fn bare_report(ctx: &JobContext, status: JobStatus, reason: String) -> Report {
    let job = JobIdentity {
        job_id: ctx.job.job_id.clone(),
        run_id: ctx.job.run_id.clone(),
        repo: ctx.job.spec.repo.clone(),
        prompt: ctx.job.spec.prompt.clone(),
        gpu_required: ctx.job.spec.gpu_required,
        enqueued_at: ctx.job.enqueued_at,
        attempt: ctx.attempt,
    };
    let mut report = Report::without_steps(
        job,
        ctx.instance.clone(),
        status,
        reason,
        env!("CARGO_PKG_VERSION"),
    );
    report.logs = ctx.log_ref.clone();
    report
}
