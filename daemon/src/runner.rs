//! One job's run, in one direction: the started record, the log shipper and the visibility
//! keep-alive, the pipeline in its own task (a panic becomes a failed report), the daemon's
//! facts added to the report, then the settler. The whole run is inside the job's span.

use std::sync::Arc;

use janitor_model::job::Job;
use janitor_model::ledger;
use janitor_model::report::{
    JobStatus, LogRef, OutputCounts, Report, StepName, StepOutput, StepStatus,
};
use janitor_pipeline::{self as pipeline, JobContext, Tools};
use janitor_services::aws::{Received, ReportStore};
use janitor_services::engine::Graces;
use janitor_services::logs::{Counting, LogSink, Shipper};
use janitor_services::metrics::{JobMetric, Metrics};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::event_loop::{Daemon, Services};
use crate::status::CurrentJob;

/// How long the daemon waits for a job's output to reach CloudWatch after the job ends;
/// what is still unshipped then is counted as dropped (it is in the archive).
pub const LOG_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

impl<X: Services> Daemon<X> {
    /// Runs one decoded job to its settled report.
    pub(crate) async fn run_job(&self, message: Received, job: Job, cancel: CancellationToken) {
        let span = tracing::info_span!("job", job_id = %job.job_id, run_id = %job.run_id, repo = %job.spec.repo.full_name(), attempt = message.receive_count);
        self.run_job_inner(message, job, cancel)
            .instrument(span)
            .await;
    }

    async fn run_job_inner(&self, message: Received, job: Job, cancel: CancellationToken) {
        let received_at = Instant::now();
        let attempt = message.receive_count;
        tracing::info!("job taken");
        let keepalive = self.settler.keep_visible(message.receipt_handle.clone());
        self.recorder.started(&job, attempt).await;
        let log_ref = LogRef {
            group: self.settings.log_group.clone(),
            stream: ledger::log_stream(&self.instance.id, &job.job_id),
        };
        let spool = self
            .settings
            .output_dir()
            .join(format!("{}.log", job.job_id));
        let shipper = Shipper::start(
            self.logs.clone(),
            log_ref.group.clone(),
            log_ref.stream.clone(),
            spool.clone(),
        );
        // The job's secrets, just in time; one that cannot be read makes the job an `error`.
        let (secrets, unreadable) =
            match janitor_services::secrets::resolve(&self.secrets, &job.spec.secrets).await {
                Ok(values) => (values, None),
                Err(why) => (Default::default(), Some(why)),
            };
        let mut publish = self.settings.publish_settings();
        if let Some(token) = secrets.get("GITHUB_TOKEN") {
            publish = Some(janitor_pipeline::publish::PublishSettings {
                api_url: self.settings.github_api_url.clone(),
                git_url: self.settings.github_git_url.clone(),
                token: token.to_string(),
                author_name: self.settings.git_author_name.clone(),
                author_email: self.settings.git_author_email.clone(),
                status_target_url: self.settings.status_target_url.clone(),
            });
        }
        // Bedrock: the agent's own short-lived credentials, minted for this job only.
        let mut agent_limits = self.settings.agent_limits.clone();
        let mut agent_credentials = Vec::new();
        let mut unreadable = unreadable;
        let agent_runs = job
            .spec
            .agent_image_or(self.settings.agent_limits.default_image.as_deref())
            .is_some();
        if let (Some((role, region)), true, None) =
            (&self.settings.agent_bedrock, agent_runs, &unreadable)
        {
            use janitor_services::secrets::CredentialSource as _;
            let session = format!("janitor-{}", job.job_id)
                .chars()
                .take(64)
                .collect::<String>();
            match self
                .secrets
                .assume(
                    role,
                    &session,
                    job.spec.timeout + std::time::Duration::from_secs(300),
                )
                .await
            {
                Ok(c) => {
                    agent_credentials = c.env();
                    agent_limits.env.push("CLAUDE_CODE_USE_BEDROCK=1".into());
                    if let Some(r) = region {
                        agent_limits.env.push(format!("AWS_REGION={r}"));
                    }
                }
                Err(e) => {
                    unreadable = Some(format!(
                        "the agent's Bedrock role {role} could not be assumed: {e}"
                    ))
                }
            }
        }
        let ctx = JobContext {
            job: job.clone(),
            attempt,
            instance: self.instance.clone(),
            work_root: self.settings.work_root(),
            graces: Graces {
                deadline: self.settings.stop_grace,
                interrupt: self.settings.interrupt_grace,
            },
            allow_local_repos: self.settings.allow_local_repos,
            log_ref: Some(log_ref),
            secrets_dir: self.settings.secrets_dir.clone(),
            publish,
            secrets,
            agent_limits,
            agent_credentials,
        };
        let setup_ms = received_at.elapsed().as_millis() as u64;
        self.status_mut(|s| {
            s.current_job = Some(CurrentJob {
                job_id: job.job_id.clone(),
                run_id: job.run_id.clone(),
                repository: job.spec.repo.full_name(),
                started_at: OffsetDateTime::now_utc(),
            });
        });
        // The job runs in its own task: a panic in it becomes a failed report, not a dead daemon.
        let counted = Arc::new(Counting::new(shipper.sink()));
        let task = {
            let engine = self.engine.clone();
            let registry = self.registry.clone();
            let gpu = self.gpu.clone();
            let ctx = ctx.clone();
            let sink: Arc<dyn LogSink> = counted.clone();
            tokio::spawn(
                async move {
                    let tools = Tools {
                        engine: &engine,
                        registry: &registry,
                        gpu: gpu.as_ref(),
                        sink: sink.as_ref(),
                    };
                    match unreadable {
                        Some(why) => pipeline::bare_report(&ctx, JobStatus::Error, why),
                        None => pipeline::run_job(&tools, &ctx, &cancel).await,
                    }
                }
                .in_current_span(),
            )
        };
        let mut report = match task.await {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(error = %e, "the job task failed; recording the job as an error, to be tried again");
                pipeline::bare_report(
                    &ctx,
                    JobStatus::Error,
                    format!("janitord could not finish the job: {e}"),
                )
            }
        };
        let ended = Instant::now();
        self.note_job(&mut report, &ctx);
        // The pipeline's task is over: this is the last holder of the shipper's sink but one.
        let (total, per_step) = (counted.total(), counted.steps());
        drop(counted);
        // The spool is whole now: it is compressed while the shipper catches up.
        shipper.flush();
        let gz = spool.with_extension("log.gz");
        let (stats, compressed) = tokio::join!(
            shipper.finish(LOG_FLUSH_LIMIT),
            janitor_services::logs::archive(&spool, &gz)
        );
        let mut output = output_counts(total, &stats);
        self.store_archive(compressed, &spool, &gz, &job, &mut output)
            .await;
        add_step_output(&mut report, &per_step, &stats);
        self.store_patch(&mut report, &job).await;
        report.output = Some(output);
        // The message stays invisible until the settler has stored the report.
        let settled = self
            .settler
            .settle(&message.receipt_handle, report.clone(), keepalive)
            .await;
        let report_ms = ended.elapsed().as_millis() as u64;
        self.send_metrics(&report).await;
        tracing::info!(
            status = report.status.as_str(),
            settled = ?settled,
            duration_s = report.timings.duration_seconds,
            log_events = stats.sent,
            log_events_dropped = stats.dropped,
            log_events_failed = stats.failed,
            ship_ms = stats.busy.as_millis() as u64,
            setup_ms,
            report_ms,
            "job finished"
        );
    }

    /// Adds what the daemon knows beyond the pipeline to the report (cache, evictions, GPU),
    /// records the images used, and counts the job for `/metrics`.
    fn note_job(&self, report: &mut Report, ctx: &JobContext) {
        let now = OffsetDateTime::now_utc();
        {
            let mut usage = self
                .usage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if report
                .step(StepName::Build)
                .is_some_and(|s| s.status == StepStatus::Succeeded)
            {
                usage.touch(
                    &pipeline::image_tag(&ctx.job.spec.repo.organization, &ctx.job.spec.repo.name),
                    now,
                );
            }
            if let Some(agent) = &ctx
                .job
                .spec
                .agent_image_or(ctx.agent_limits.default_image.as_deref())
            {
                if report.step(StepName::Agent).is_some_and(|s| {
                    s.status != StepStatus::Skipped && s.status != StepStatus::NotRun
                }) {
                    usage.touch(agent, now);
                }
            }
        }
        self.status_mut(|s| {
            report.cache.bytes_used = Some(s.cache.used_bytes);
            report.cache.evicted = std::mem::take(&mut s.pending_evictions);
            report.cache.own_volume = Some(s.cache.own_volume);
            if report.gpu.is_none() {
                report.gpu = s.gpus.report();
            }
            *s.jobs_by_status
                .entry(report.status.as_str().to_string())
                .or_default() += 1;
            s.job_duration_seconds
                .observe(report.timings.duration_seconds);
            s.queue_wait_seconds
                .observe(report.timings.queue_wait_seconds);
            s.current_job = None;
        });
    }

    /// Stores the job's gzipped output as `output.log.gz` beside its report and removes the
    /// spool; a failure is said in the report and costs only the archive.
    async fn store_archive(
        &self,
        compressed: std::io::Result<u64>,
        spool: &std::path::Path,
        gz: &std::path::Path,
        job: &Job,
        output: &mut OutputCounts,
    ) {
        let key = ledger::output_key(&job.run_id, &job.job_id);
        let stored = match compressed {
            Err(e) => Err(format!("cannot compress {}: {e}", spool.display())),
            Ok(_) => janitor_services::aws::with_retries(&key, || {
                self.settler.store.put_file(&key, gz, "application/gzip")
            })
            .await
            .map_err(|e| e.to_string()),
        };
        match stored {
            Ok(()) => output.archive = Some(key),
            Err(e) => {
                tracing::warn!(error = %e, "the job's output archive was not stored");
                output.archive_error = Some(e);
            }
        }
        for f in [spool, gz] {
            let _ = tokio::fs::remove_file(f).await;
        }
    }

    /// Stores the agent's fix as `fix.patch` beside the report; a failure is said in the report.
    async fn store_patch(&self, report: &mut Report, job: &Job) {
        let Some(fix) = report.fix.as_mut() else {
            return;
        };
        let Some(text) = fix.patch_text.take() else {
            return;
        };
        let key = ledger::patch_key(&job.run_id, &job.job_id);
        let path = self
            .settings
            .output_dir()
            .join(format!("{}.patch", job.job_id));
        let stored = match tokio::fs::write(&path, text).await {
            Err(e) => Err(format!("cannot write {}: {e}", path.display())),
            Ok(()) => janitor_services::aws::with_retries(&key, || {
                self.settler.store.put_file(&key, &path, "text/x-diff")
            })
            .await
            .map_err(|e| e.to_string()),
        };
        let _ = tokio::fs::remove_file(&path).await;
        match stored {
            Ok(()) => fix.patch = Some(key),
            Err(e) => {
                tracing::warn!(error = %e, "the agent's patch was not stored");
                fix.patch_error = Some(e);
            }
        }
    }

    /// The job's figures to the metrics service; a failure costs only the metric.
    async fn send_metrics(&self, report: &Report) {
        let metric = JobMetric {
            status: report.status.as_str().to_string(),
            duration_seconds: report.timings.duration_seconds,
            queue_wait_seconds: report.timings.queue_wait_seconds,
            cache_hits: report.cache.hits,
            cache_steps: report.cache.steps,
            timestamp_ms: (report.timings.finished_at.unix_timestamp_nanos() / 1_000_000) as i64,
        };
        if let Err(e) = self.metrics.job_finished(&metric).await {
            tracing::warn!(error = %e, "job metrics not sent; the report has the same figures");
        }
    }
}

/// What the report says of the job's output.
fn output_counts(
    total: janitor_services::logs::Tally,
    stats: &janitor_services::logs::ShipStats,
) -> OutputCounts {
    let still = "every line was still scanned for ERROR and is in the archive";
    let dropped = |d: u64| match &stats.dropped_reason {
        Some(why) => format!("{d} events not shipped: {why}"),
        None => format!("{d} events not shipped"),
    };
    let missing_reason = match (stats.dropped, stats.failed) {
        (0, 0) => None,
        (d, 0) => Some(format!("{}; {still}", dropped(d))),
        (0, f) => Some(format!(
            "{f} events not taken by CloudWatch after the retries; {still}"
        )),
        (d, f) => Some(format!(
            "{} and {f} not taken by CloudWatch after the retries; {still}",
            dropped(d)
        )),
    };
    OutputCounts {
        lines: total.lines,
        bytes: total.bytes,
        events: total.events,
        shipped_events: stats.sent,
        dropped_events: stats.dropped,
        failed_events: stats.failed,
        missing_reason,
        archive: None,
        archive_error: None,
    }
}

/// Each step's lines, bytes and events, and what of them was shipped; the events not shipped
/// or refused are the step's dropped ones.
fn add_step_output(
    report: &mut Report,
    per_step: &[(String, janitor_services::logs::Tally)],
    stats: &janitor_services::logs::ShipStats,
) {
    for step in &mut report.steps {
        let name = step.name.as_str();
        let Some((_, tally)) = per_step.iter().find(|(s, _)| s == name) else {
            continue;
        };
        let (sent, failed) = stats
            .per_step
            .iter()
            .find(|(s, _, _)| s == name)
            .map_or((0, 0), |(_, s, f)| (*s, *f));
        step.output = Some(StepOutput {
            lines: tally.lines,
            bytes: tally.bytes,
            events: tally.events,
            shipped_events: sent,
            dropped_events: tally.events.saturating_sub(sent + failed),
            failed_events: failed,
        });
    }
}
