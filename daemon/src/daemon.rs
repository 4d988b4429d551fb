//! The daemon's loop: one `select!` over the queue, the running job, instance-metadata notices,
//! signals and a one-second tick; `machine::next` decides, this module acts. A job's report is
//! spooled to disk before upload and its message deleted only after, so none is lost between.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use janitor_model::job::{self, Job, Rejection};
use janitor_model::ledger::{self, InstanceEvent, RejectedRecord, StartedRecord};
use janitor_model::report::{
    InstanceInfo, JobIdentity, JobStatus, LogRef, Report, StepName, StepStatus,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::{self, JobQueue, Received, ReportStore, AWS_RETRY_BASE, AWS_RETRY_CAP};
use crate::backoff::Backoff;
use crate::docker::{Engine, Graces};
use crate::gpu;
use crate::health::{self, CurrentJob};
use crate::hygiene::{self, Usage};
use crate::lifecycle::{self, Membership, Notice};
use crate::logs::{CloudWatchShipper, LogSink};
use crate::machine::{self, Action, Event, State, Target};
use crate::pipeline::{self, JobContext};
use crate::settings::Settings;
use crate::systemd;

/// How long the daemon waits for a job's output to reach CloudWatch after the job ends.
pub const LOG_FLUSH_LIMIT: Duration = Duration::from_secs(15);
/// First delay after a failed SQS receive.
pub const SQS_RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest delay between failed SQS receives.
pub const SQS_RETRY_CAP: Duration = Duration::from_secs(30);
/// Attempts at `CompleteLifecycleAction` before the hook's own timeout is left to act.
pub const LIFECYCLE_COMPLETE_ATTEMPTS: u32 = 5;
/// How often the dead-man heartbeat file is rewritten.
pub const HEARTBEAT_FILE_EVERY: Duration = Duration::from_secs(10);

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
    /// This instance in its Auto Scaling group; `None` off a group (tests, a lone machine).
    pub membership: Option<Membership>,
    /// NVML, or the reason there is none.
    pub gpu: Arc<gpu::Probe>,
    /// What `/health` and `/metrics` show; the loop keeps it current.
    pub status: health::Shared,
    /// When each cached image was last used, for eviction.
    pub usage: std::sync::Mutex<Usage>,
    /// For registry logins (ECR agent images); `None` leaves pulls anonymous.
    pub sdk: Option<aws_config::SdkConfig>,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
}

/// Everything that reaches the loop, from one `select!`.
enum Input {
    Received(Result<Option<Received>, aws::AwsError>),
    JobDone,
    Notice(Notice),
    Signal,
    Tick,
}

type Pending<'a, T> = Option<Pin<Box<dyn Future<Output = T> + Send + 'a>>>;

/// Awaits an optional future; never resolves when there is none.
async fn maybe<T>(f: &mut Pending<'_, T>) -> T {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

impl<Q: JobQueue + Clone + 'static, S: ReportStore + Clone + 'static> Daemon<Q, S> {
    /// Runs until shutdown (or, with `exit_when_idle`, until the queue is empty or the instance
    /// is parked). Every input is one [`Input`]; every decision is `machine::next`.
    pub async fn run(&self) {
        self.recover_orphans().await;
        self.record_instance_event("daemon-start", "janitord started and is polling the queue")
            .await;
        self.drain_spool().await;
        let policy = self.settings.hygiene();
        let inventory = self.status_mut(|s| s.gpus.clone());
        self.cleanup(&policy).await;
        let mut last_cleanup = Instant::now();
        let clock = Instant::now();
        let now = || clock.elapsed().as_secs();
        let cfg = machine::Config {
            idle_timeout: self.settings.idle_timeout.as_secs(),
            heartbeat_every: self
                .membership
                .as_ref()
                .map_or(self.settings.lifecycle_heartbeat.as_secs(), |m| {
                    m.heartbeat_every
                }),
            scale_in: self.membership.is_some(),
        };
        let (notice_tx, mut notices) = mpsc::channel(16);
        let watcher_stop = CancellationToken::new();
        // Off EC2 (an instance id given in the settings) there is no metadata service to watch.
        let watcher = self.settings.instance_id.is_none().then(|| {
            lifecycle::watch_imds(self.settings.imds_interval, notice_tx, watcher_stop.clone())
        });
        let watchdog = systemd::watchdog_every();
        let mut last_watchdog = Instant::now();
        let mut last_beat: Option<Instant> = None;
        let mut state = State::Idle { since: 0 };
        let mut receiving: Pending<'_, Result<Option<Received>, aws::AwsError>> = None;
        let mut job: Pending<'_, ()> = None;
        let mut job_cancel = CancellationToken::new();
        let mut poll_backoff = Backoff::new(SQS_RETRY_BASE, SQS_RETRY_CAP);
        let mut poll_after = Instant::now();
        let mut signalled = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        systemd::notify("READY=1");
        tracing::info!(in_group = self.membership.is_some(), "janitord is serving");

        while state != State::Done {
            if state.accepts_jobs()
                && job.is_none()
                && receiving.is_none()
                && Instant::now() >= poll_after
            {
                // Reports a failed upload left behind go before the next job is taken.
                self.drain_spool().await;
                if let Some(reason) = self.unfit_for_jobs(&policy).await {
                    self.status_mut(|s| s.unhealthy = Some(reason.clone()));
                    state = self
                        .apply(state, Event::Unfit, &cfg, &job_cancel, now)
                        .await;
                    continue;
                }
                let queue = self.queue.clone();
                let (wait, visibility) =
                    (self.settings.poll_wait, self.settings.visibility_timeout);
                receiving = Some(Box::pin(
                    async move { queue.receive(wait, visibility).await },
                ));
            }
            let input = tokio::select! {
                r = maybe(&mut receiving) => { receiving = None; Input::Received(r) }
                () = maybe(&mut job) => { job = None; Input::JobDone }
                Some(n) = notices.recv() => Input::Notice(n),
                () = self.shutdown.cancelled(), if !signalled => { signalled = true; Input::Signal }
                _ = tick.tick() => Input::Tick,
            };
            let event = match input {
                Input::Received(Err(e)) => {
                    let delay = poll_backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "could not poll the queue");
                    poll_after = Instant::now() + delay;
                    None
                }
                Input::Received(Ok(None)) => {
                    poll_backoff = Backoff::new(SQS_RETRY_BASE, SQS_RETRY_CAP);
                    self.status_mut(|s| s.last_successful_poll = Some(OffsetDateTime::now_utc()));
                    if self.settings.exit_when_idle
                        && state.accepts_jobs()
                        && self.queue_is_empty().await
                    {
                        tracing::info!("queue is empty; exiting as asked (--exit-when-idle)");
                        break;
                    }
                    None
                }
                Input::Received(Ok(Some(message))) => {
                    poll_backoff = Backoff::new(SQS_RETRY_BASE, SQS_RETRY_CAP);
                    self.status_mut(|s| s.last_successful_poll = Some(OffsetDateTime::now_utc()));
                    if !state.accepts_jobs() {
                        // The state changed while the poll was out: give the message straight back.
                        if let Err(e) = self
                            .queue
                            .set_visibility(&message.receipt_handle, Duration::ZERO)
                            .await
                        {
                            tracing::warn!(error = %e, "could not hand a message back");
                        }
                        None
                    } else {
                        match job::decode(&message.body, self.settings.allow_local_repos) {
                            Err(rejection) => {
                                self.reject(&message, rejection).await;
                                None
                            }
                            Ok(decoded) => {
                                let gpu = if decoded.spec.gpu_required {
                                    self.gpu.check(inventory.count)
                                } else {
                                    Ok(())
                                };
                                match gpu {
                                    Err(reason) => {
                                        self.hand_back_for_gpu(&message, &decoded, &reason).await;
                                        if self.settings.expect_gpus {
                                            self.status_mut(|s| {
                                                s.unhealthy =
                                                    Some(format!("no usable GPU: {reason}"))
                                            });
                                            Some(Event::Unfit)
                                        } else {
                                            None
                                        }
                                    }
                                    Ok(()) => {
                                        job_cancel = CancellationToken::new();
                                        job = Some(Box::pin(self.handle(
                                            message,
                                            decoded,
                                            job_cancel.clone(),
                                        )));
                                        Some(Event::JobStarted)
                                    }
                                }
                            }
                        }
                    }
                }
                Input::JobDone => Some(Event::JobEnded { now: now() }),
                Input::Notice(Notice::Target(t)) => Some(Event::Lifecycle {
                    now: now(),
                    target: Target::parse(&t),
                }),
                Input::Notice(Notice::Spot(_)) => Some(Event::SpotNotice),
                Input::Signal => {
                    systemd::notify("STOPPING=1");
                    Some(Event::Signal)
                }
                Input::Tick => {
                    if let Some(every) = watchdog {
                        if last_watchdog.elapsed() >= every {
                            systemd::notify("WATCHDOG=1");
                            last_watchdog = Instant::now();
                        }
                    }
                    if last_beat.is_none_or(|b| b.elapsed() >= HEARTBEAT_FILE_EVERY) {
                        if let Err(e) = systemd::beat(&self.settings.heartbeat_file) {
                            tracing::warn!(path = %self.settings.heartbeat_file.display(), error = %e, "could not write the heartbeat file; the dead-man timer may power the instance off");
                        }
                        last_beat = Some(Instant::now());
                    }
                    Some(Event::Tick { now: now() })
                }
            };
            let job_ended = matches!(event, Some(Event::JobEnded { .. }));
            if let Some(event) = event {
                state = self.apply(state, event, &cfg, &job_cancel, now).await;
            }
            // Cleanup only while no job runs: after each job and on the interval.
            if state.accepts_jobs()
                && job.is_none()
                && (job_ended || last_cleanup.elapsed() >= self.settings.cleanup_interval)
            {
                self.cleanup(&policy).await;
                last_cleanup = Instant::now();
            }
            self.status_mut(|s| s.state = format!("{state:?}"));
            if state == State::Parked && self.settings.exit_when_idle {
                tracing::info!("parked; exiting as asked (--exit-when-idle)");
                break;
            }
        }
        watcher_stop.cancel();
        if let Some(w) = watcher {
            let _ = w.await;
        }
        if state != State::Done {
            self.record_instance_event("daemon-stop", "janitord stopped")
                .await;
        }
    }

    /// Feeds one event through the machine and performs its actions; actions that ask a
    /// question (queue empty? capacity lowered?) feed their answer back in.
    async fn apply(
        &self,
        mut state: State,
        event: Event,
        cfg: &machine::Config,
        job_cancel: &CancellationToken,
        now: impl Fn() -> u64,
    ) -> State {
        let mut pending = VecDeque::from([event]);
        while let Some(event) = pending.pop_front() {
            let (next, actions) = machine::next(state, &event, cfg);
            if next != state {
                tracing::debug!(from = ?state, to = ?next, event = ?event, "state");
            }
            state = next;
            for action in actions {
                match action {
                    Action::Protect | Action::Unprotect => {
                        if let Some(m) = &self.membership {
                            if let Err(e) = m.protect(action == Action::Protect).await {
                                tracing::warn!(error = %e, "scale-in protection not changed");
                            }
                        }
                    }
                    Action::StopJob => {
                        tracing::info!(
                            "stopping the running job; its message goes back to the queue"
                        );
                        job_cancel.cancel();
                    }
                    Action::CheckQueue => {
                        let empty = self.queue_is_empty().await;
                        pending.push_back(Event::QueueChecked { now: now(), empty });
                    }
                    Action::ScaleIn => {
                        let lowered = match &self.membership {
                            Some(m) => m.scale_in().await.unwrap_or_else(|e| {
                                tracing::warn!(error = %e, "could not lower the desired capacity; trying again after the next idle period");
                                false
                            }),
                            None => false,
                        };
                        pending.push_back(Event::ScaledIn {
                            now: now(),
                            lowered,
                        });
                    }
                    Action::Heartbeat => {
                        if let Some(m) = &self.membership {
                            match m.heartbeat().await {
                                Ok(()) => tracing::info!(
                                    "lifecycle heartbeat sent while the job finishes"
                                ),
                                Err(e) => tracing::warn!(error = %e, "lifecycle heartbeat failed"),
                            }
                        }
                    }
                    Action::CompleteLifecycle => self.complete_lifecycle().await,
                    Action::MarkUnhealthy => {
                        let reason = self.status_mut(|s| s.unhealthy.clone()).unwrap_or_default();
                        tracing::error!(reason = %reason, "this instance cannot take jobs; marking it unhealthy");
                        if let Some(m) = &self.membership {
                            if let Err(e) = m.mark_unhealthy().await {
                                tracing::warn!(error = %e, "could not mark the instance unhealthy");
                            }
                        }
                    }
                    Action::Record(event) => {
                        let detail = match (event, self.status_mut(|s| s.unhealthy.clone())) {
                            ("unhealthy", Some(reason)) => reason,
                            _ => format!("state {state:?}"),
                        };
                        self.record_instance_event(event, &detail).await;
                    }
                }
            }
        }
        state
    }

    /// Runs `f` on the shared status (a poisoned lock is still used: it only holds figures).
    fn status_mut<T>(&self, f: impl FnOnce(&mut health::Status) -> T) -> T {
        match self.status.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// One cleanup; its figures go to the status.
    async fn cleanup(&self, policy: &hygiene::Policy) {
        let mut usage = std::mem::take(
            &mut *self
                .usage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let done =
            hygiene::cleanup(&self.engine, policy, &mut usage, OffsetDateTime::now_utc()).await;
        *self
            .usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = usage;
        let disk = hygiene::disk(&self.settings.cache_dir);
        self.status_mut(|s| {
            s.cache.used_bytes = done.cache_used_after;
            s.cache.capacity_bytes = done.cache_capacity;
            s.cache.evicted_total += done.evicted.len() as u64;
            s.pending_evictions.extend(done.evicted.iter().cloned());
            s.cache.last_cleanup = Some(done);
            s.disk = disk;
        });
    }

    /// `Some(reason)` when the cache volume is under its floors even after a cleanup.
    async fn unfit_for_jobs(&self, policy: &hygiene::Policy) -> Option<String> {
        let stats = hygiene::disk(&self.settings.cache_dir)?;
        if hygiene::floors(&stats, policy).is_ok() {
            return None;
        }
        self.cleanup(policy).await;
        let stats = hygiene::disk(&self.settings.cache_dir)?;
        hygiene::floors(&stats, policy)
            .err()
            .map(|e| format!("after cleanup, {e}"))
    }

    /// A GPU job on an instance without a usable GPU goes back to the queue for another instance.
    async fn hand_back_for_gpu(&self, message: &Received, job: &Job, reason: &str) {
        tracing::warn!(job_id = %job.job_id, reason, "a GPU job, but no usable GPU here: handing it back");
        let record = serde_json::json!({
            "job_id": job.job_id,
            "run_id": job.run_id,
            "attempt": message.receive_count,
            "instance": self.instance,
            "reason": format!("no usable GPU: {reason}"),
        });
        let key = format!(
            "{}jobs/{}/handed-back-{}.json",
            ledger::run_prefix(&job.run_id),
            job.job_id,
            message.receive_count
        );
        self.put_record(&key, &record).await;
        if let Err(e) = self
            .queue
            .set_visibility(&message.receipt_handle, self.settings.reject_retry)
            .await
        {
            tracing::warn!(error = %e, "could not hand the GPU job back");
        }
    }

    async fn complete_lifecycle(&self) {
        let Some(m) = &self.membership else { return };
        let mut backoff = Backoff::new(AWS_RETRY_BASE, AWS_RETRY_CAP);
        for attempt in 1..=LIFECYCLE_COMPLETE_ATTEMPTS {
            match m.complete().await {
                Ok(()) => {
                    tracing::info!(group = %m.group, hook = ?m.hook, "lifecycle action completed (CONTINUE)");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "CompleteLifecycleAction failed");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        tracing::error!("could not complete the lifecycle action; the group will continue at the hook's timeout");
    }

    /// Removes containers a previous janitord on this instance left behind (it crashed or was
    /// killed) and records the crashed attempts. Their jobs come back through the queue.
    async fn recover_orphans(&self) {
        let orphans = match self.engine.managed_containers(&self.instance.id).await {
            Ok(o) => o,
            Err(e) => {
                return tracing::warn!(error = %e, "could not look for containers left by an earlier janitord")
            }
        };
        for (name, labels) in orphans {
            tracing::warn!(container = %name, "removing a container left by an earlier janitord");
            self.engine.remove(&name).await;
            let (Some(run_id), Some(job_id)) =
                (labels.get("janitor.run_id"), labels.get("janitor.job_id"))
            else {
                continue;
            };
            let attempt = labels
                .get("janitor.attempt")
                .cloned()
                .unwrap_or_else(|| "unknown".to_string());
            let record = serde_json::json!({
                "job_id": job_id,
                "run_id": run_id,
                "attempt": attempt,
                "container": name,
                "instance": self.instance,
                "found_at": OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                "detail": "janitord stopped without finishing this attempt; the job comes back through the queue",
            });
            self.put_record(
                &format!(
                    "{}jobs/{job_id}/crashed-{attempt}.json",
                    ledger::run_prefix(run_id)
                ),
                &record,
            )
            .await;
        }
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

    /// Runs one decoded job to its settled report.
    async fn handle(&self, message: Received, job: Job, cancel: CancellationToken) {
        let received_at = Instant::now();
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
            graces: Graces {
                deadline: self.settings.stop_grace,
                interrupt: self.settings.interrupt_grace,
            },
            allow_local_repos: self.settings.allow_local_repos,
            log_ref: Some(log_ref),
            agent_credentials: self.agent_credentials(&job).await,
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
        let task = {
            let engine = self.engine.clone();
            let ctx = ctx.clone();
            let sink: Arc<dyn LogSink> = shipper.sink();
            tokio::spawn(
                async move { pipeline::run_job(&engine, &ctx, sink.as_ref(), &cancel).await },
            )
        };
        let mut report = match task.await {
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
        self.note_job(&mut report, &ctx);
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

    /// Registry credentials for the job's agent image when it is in ECR and not yet on the instance.
    async fn agent_credentials(&self, job: &Job) -> Option<crate::docker::RegistryCredentials> {
        let image = job.spec.agent_image.as_deref()?;
        let registry = aws::ecr_registry(image)?;
        if self.engine.has_image(image).await {
            return None;
        }
        match aws::ecr_credentials(self.sdk.as_ref()?, &registry).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, image, "no ECR login; pulling the agent image anonymously");
                None
            }
        }
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
            if let Some(agent) = &ctx.job.spec.agent_image {
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
