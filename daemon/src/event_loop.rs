//! The daemon's loop: every input (a received message, the job's end, an instance-metadata
//! notice, a stop signal, the one-second tick) becomes one [`Event`] from [`Daemon::next_event`],
//! and [`Daemon::handle_event`] turns it into a lifecycle event for the pure `machine::next`,
//! whose actions [`Daemon::apply`] carries out. Decisions are in `decide` and `machine`; one job's
//! run is in `runner`, its result's settling in `settler`, ledger records in `recorder`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use janitor_model::job;
use janitor_model::report::InstanceInfo;
use janitor_services::aws::{JobQueue, Received, ReportStore, AWS_RETRY_BASE, AWS_RETRY_CAP};
use janitor_services::backoff::Backoff;
use janitor_services::engine::ContainerEngine;
use janitor_services::error::ServiceError;
use janitor_services::fleet::Fleet;
use janitor_services::gpu::GpuProbe;
use janitor_services::imds::{self, Metadata, Notice};
use janitor_services::logs::LogApi;
use janitor_services::metrics::Metrics;
use janitor_services::registry::RegistryAuth;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;

use crate::decide::{self, Admission};
use crate::hygiene::{self, Usage};
use crate::machine::{self, Action, State, Target};
use crate::recorder::Recorder;
use crate::settings::Settings;
use crate::settler::Settler;
use crate::status::{Shared, Status};
use crate::systemd;

/// First delay after a failed SQS receive.
pub const SQS_RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest delay between failed SQS receives.
pub const SQS_RETRY_CAP: Duration = Duration::from_secs(30);
/// Attempts at `CompleteLifecycleAction` before the hook's own timeout is left to act.
pub const LIFECYCLE_COMPLETE_ATTEMPTS: u32 = 5;
/// How much longer than the poll's own wait an open poll is waited for when the daemon stops.
pub const POLL_SLACK: Duration = Duration::from_secs(5);
/// How long the daemon waits for its first lifecycle-state read before it polls without one.
pub const LIFECYCLE_READ_LIMIT: Duration = Duration::from_secs(60);
/// Least wait between attempts at an unsettled spool.
pub const SPOOL_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between attempts at an unsettled spool.
pub const SPOOL_RETRY_CAP: Duration = Duration::from_secs(30);
/// How often the dead-man heartbeat file is rewritten.
pub const HEARTBEAT_FILE_EVERY: Duration = Duration::from_secs(10);

/// The outside services the daemon runs on: AWS and Docker in production, the same with a
/// fault-injecting wrapper in tests.
pub trait Services: 'static {
    type Queue: JobQueue + Clone + 'static;
    type Store: ReportStore + Clone + 'static;
    type Engine: ContainerEngine;
    type Logs: LogApi;
    type Fleet: Fleet + 'static;
    type Registry: RegistryAuth + Clone + 'static;
    type Metadata: Metadata;
    type Metrics: Metrics + 'static;
    type Secrets: janitor_services::secrets::SecretSource
        + janitor_services::secrets::CredentialSource
        + 'static;
}

/// Everything a daemon is made of.
pub struct Parts<X: Services> {
    pub settings: Settings,
    pub queue: X::Queue,
    pub store: X::Store,
    pub logs: X::Logs,
    pub engine: X::Engine,
    pub registry: X::Registry,
    pub metrics: X::Metrics,
    /// Where the jobs' `secrets:` are read from.
    pub secrets: X::Secrets,
    pub instance: InstanceInfo,
    /// This instance in its Auto Scaling group; `None` off a group (tests, a lone machine).
    pub fleet: Option<X::Fleet>,
    /// The metadata service to watch; `None` off EC2.
    pub metadata: Option<X::Metadata>,
    pub gpu: Arc<dyn GpuProbe>,
    /// What `/health` and `/metrics` show; the loop keeps it current.
    pub status: Shared,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
}

pub struct Daemon<X: Services> {
    pub(crate) settings: Settings,
    pub(crate) queue: X::Queue,
    pub(crate) logs: X::Logs,
    pub(crate) engine: X::Engine,
    pub(crate) registry: X::Registry,
    pub(crate) metrics: X::Metrics,
    pub(crate) secrets: X::Secrets,
    pub(crate) instance: InstanceInfo,
    pub(crate) fleet: Option<X::Fleet>,
    pub(crate) metadata: Option<X::Metadata>,
    pub(crate) gpu: Arc<dyn GpuProbe>,
    pub(crate) status: Shared,
    /// When each cached image was last used, for eviction.
    pub(crate) usage: Mutex<Usage>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) settler: Settler<X::Queue, X::Store>,
    pub(crate) recorder: Recorder<X::Store>,
}

/// Every input of the loop, from one `select!`.
pub enum Event {
    Received(Result<Option<Received>, ServiceError>),
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

/// The loop's own state between turns.
struct Turn<'a> {
    state: State,
    receiving: Pending<'a, Result<Option<Received>, ServiceError>>,
    job: Pending<'a, ()>,
    job_cancel: CancellationToken,
    poll_backoff: Backoff,
    poll_after: Instant,
    spool_backoff: Backoff,
    signalled: bool,
    notices: mpsc::Receiver<Notice>,
    tick: Interval,
    clock: Instant,
    last_watchdog: Instant,
    last_beat: Option<Instant>,
    last_cleanup: Instant,
    /// Whether the lifecycle state has been read (always, off EC2).
    lifecycle_known: bool,
    exit: bool,
}

impl Turn<'_> {
    fn now(&self) -> u64 {
        self.clock.elapsed().as_secs()
    }
}

impl<X: Services> Daemon<X> {
    pub fn new(p: Parts<X>) -> Self {
        let usage = Mutex::new(Usage::load(&p.settings.cache_dir));
        Daemon {
            settler: Settler {
                queue: p.queue.clone(),
                store: p.store.clone(),
                spool_dir: p.settings.spool_dir(),
                visibility: p.settings.visibility_timeout,
                error_retry: p.settings.error_retry,
                unsettled: Arc::default(),
            },
            recorder: Recorder {
                store: p.store,
                instance: p.instance.clone(),
            },
            settings: p.settings,
            queue: p.queue,
            logs: p.logs,
            engine: p.engine,
            registry: p.registry,
            secrets: p.secrets,
            metrics: p.metrics,
            instance: p.instance,
            fleet: p.fleet,
            metadata: p.metadata,
            gpu: p.gpu,
            status: p.status,
            usage,
            shutdown: p.shutdown,
        }
    }

    pub fn instance(&self) -> &InstanceInfo {
        &self.instance
    }

    pub(crate) fn status_mut<T>(&self, f: impl FnOnce(&mut Status) -> T) -> T {
        Status::update(&self.status, f)
    }

    /// Runs until shutdown (or, with `exit_when_idle`, until the queue is empty or the instance
    /// is parked).
    pub async fn run(&self) {
        self.recover_orphans().await;
        self.recorder
            .instance_event("daemon-start", "janitord started and is polling the queue")
            .await;
        self.settler.drain_spool().await;
        let policy = self.settings.hygiene();
        self.cleanup(&policy).await;
        if !self.settings.prefetch_images.is_empty() {
            // In the background: the first poll does not wait for a pull.
            let (engine, registry) = (self.engine.clone(), self.registry.clone());
            let images = self.settings.prefetch_images.clone();
            tokio::spawn(async move {
                crate::hygiene::prefetch(&engine, &registry, &images).await;
            });
        }
        let cfg = machine::Config {
            idle_timeout: self.settings.idle_timeout.as_secs(),
            heartbeat_every: self
                .fleet
                .as_ref()
                .map_or(self.settings.lifecycle_heartbeat.as_secs(), |f| {
                    f.heartbeat_every()
                }),
            scale_in: self.fleet.is_some(),
        };
        let (notice_tx, notices) = mpsc::channel(16);
        let watcher_stop = CancellationToken::new();
        let watcher = self.metadata.clone().map(|m| {
            imds::watch(
                m,
                self.settings.imds_interval,
                notice_tx,
                watcher_stop.clone(),
            )
        });
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let now = Instant::now();
        let mut turn = Turn {
            state: State::Idle { since: 0 },
            receiving: None,
            job: None,
            job_cancel: CancellationToken::new(),
            poll_backoff: Backoff::new(SQS_RETRY_BASE, SQS_RETRY_CAP),
            poll_after: now,
            spool_backoff: Backoff::new(SPOOL_RETRY_MIN, SPOOL_RETRY_CAP),
            signalled: false,
            notices,
            tick,
            clock: now,
            last_watchdog: now,
            last_beat: None,
            last_cleanup: now,
            lifecycle_known: self.metadata.is_none(),
            exit: false,
        };
        systemd::notify("READY=1");
        tracing::info!(in_group = self.fleet.is_some(), "janitord is serving");

        while turn.state != State::Done && !turn.exit {
            if decide::should_poll(
                turn.state.accepts_jobs(),
                turn.job.is_some(),
                turn.receiving.is_some(),
                Instant::now() >= turn.poll_after,
                turn.lifecycle_known,
            ) {
                // Reports a failed upload left behind go before the next job is taken; while
                // one is unsettled no job is taken (its message stays invisible meanwhile).
                let unsettled = self.settler.drain_spool().await;
                self.status_mut(|s| s.unsettled_reports = unsettled);
                if unsettled > 0 {
                    let delay = turn.spool_backoff.next_delay().max(SPOOL_RETRY_MIN);
                    tracing::warn!(
                        unsettled,
                        retry_in_ms = delay.as_millis() as u64,
                        "a report is not stored yet: no new job until it is"
                    );
                    turn.poll_after = Instant::now() + delay;
                } else {
                    turn.spool_backoff = Backoff::new(SPOOL_RETRY_MIN, SPOOL_RETRY_CAP);
                    if let Some(reason) = self.unfit_for_jobs(&policy).await {
                        self.status_mut(|s| s.unhealthy = Some(reason.clone()));
                        self.apply(&mut turn, machine::Event::Unfit, &cfg).await;
                        continue;
                    }
                    let queue = self.queue.clone();
                    let (wait, visibility) =
                        (self.settings.poll_wait, self.settings.visibility_timeout);
                    turn.receiving =
                        Some(Box::pin(
                            async move { queue.receive(wait, visibility).await },
                        ));
                }
            }
            let event = self.next_event(&mut turn).await;
            let job_ended = matches!(event, Event::JobDone);
            if let Some(event) = self.handle_event(&mut turn, event).await {
                self.apply(&mut turn, event, &cfg).await;
            }
            if decide::cleanup_due(
                turn.state.accepts_jobs(),
                turn.job.is_some(),
                job_ended,
                turn.last_cleanup.elapsed() >= self.settings.cleanup_interval,
            ) {
                self.cleanup(&policy).await;
                turn.last_cleanup = Instant::now();
            }
            let state = turn.state;
            self.status_mut(|s| s.state = format!("{state:?}"));
            if turn.state == State::Parked && self.settings.exit_when_idle {
                tracing::info!("parked; exiting as asked (--exit-when-idle)");
                break;
            }
        }
        if let Some(poll) = turn.receiving.take() {
            self.hand_back_open_poll(poll).await;
        }
        watcher_stop.cancel();
        if let Some(w) = watcher {
            let _ = w.await;
        }
        if turn.state != State::Done {
            self.recorder
                .instance_event("daemon-stop", "janitord stopped")
                .await;
        }
    }

    /// The daemon stops with a long poll open: a message the poll brings must not stay hidden
    /// for the visibility timeout, so the poll is awaited (at most its wait) and whatever it
    /// brings is made visible again at once.
    async fn hand_back_open_poll(
        &self,
        poll: Pin<Box<dyn Future<Output = Result<Option<Received>, ServiceError>> + Send + '_>>,
    ) {
        tracing::info!("stopping with a poll open: waiting for it, to hand back what it brings");
        match tokio::time::timeout(self.settings.poll_wait + POLL_SLACK, poll).await {
            Ok(Ok(Some(message))) => {
                match self
                    .queue
                    .set_visibility(&message.receipt_handle, Duration::ZERO)
                    .await
                {
                    Ok(()) => tracing::info!(message_id = %message.message_id, "a message received while stopping was handed back"),
                    Err(e) => tracing::warn!(message_id = %message.message_id, error = %e, "could not hand back a message received while stopping; it returns after its visibility timeout"),
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the last poll failed"),
            Err(_) => tracing::warn!("the last poll did not answer in time; a message it took returns after its visibility timeout"),
        }
    }

    /// Waits for the next input.
    async fn next_event<'a>(&'a self, turn: &mut Turn<'a>) -> Event {
        tokio::select! {
            r = maybe(&mut turn.receiving) => { turn.receiving = None; Event::Received(r) }
            () = maybe(&mut turn.job) => { turn.job = None; Event::JobDone }
            Some(n) = turn.notices.recv() => Event::Notice(n),
            () = self.shutdown.cancelled(), if !turn.signalled => { turn.signalled = true; Event::Signal }
            _ = turn.tick.tick() => Event::Tick,
        }
    }

    /// Turns one input into what the lifecycle machine hears, doing what the input itself asks
    /// (start a job, reject a message, beat the watchdog).
    async fn handle_event<'a>(
        &'a self,
        turn: &mut Turn<'a>,
        event: Event,
    ) -> Option<machine::Event> {
        match event {
            Event::Received(Err(e)) => {
                let delay = turn.poll_backoff.next_delay();
                tracing::warn!(error = %e, kind = %e.kind, retry_in_ms = delay.as_millis() as u64, "could not poll the queue");
                turn.poll_after = Instant::now() + delay;
                None
            }
            Event::Received(Ok(None)) => {
                self.polled(turn);
                if self.settings.exit_when_idle
                    && turn.state.accepts_jobs()
                    && decide::queue_is_empty(self.depth().await)
                {
                    tracing::info!("queue is empty; exiting as asked (--exit-when-idle)");
                    turn.exit = true;
                }
                None
            }
            Event::Received(Ok(Some(message))) => {
                self.polled(turn);
                self.admit(turn, message).await
            }
            Event::JobDone => Some(machine::Event::JobEnded { now: turn.now() }),
            Event::Notice(Notice::Target(t)) => Some(machine::Event::Lifecycle {
                now: turn.now(),
                target: Target::parse(&t),
            }),
            Event::Notice(Notice::Spot(_)) => Some(machine::Event::SpotNotice),
            Event::Notice(Notice::FirstRead) => {
                turn.lifecycle_known = true;
                None
            }
            Event::Signal => {
                systemd::notify("STOPPING=1");
                Some(machine::Event::Signal)
            }
            Event::Tick => {
                if !turn.lifecycle_known && turn.clock.elapsed() >= LIFECYCLE_READ_LIMIT {
                    tracing::warn!(
                        limit_s = LIFECYCLE_READ_LIMIT.as_secs(),
                        "the lifecycle state could not be read; taking jobs without it"
                    );
                    turn.lifecycle_known = true;
                }
                self.beat(turn);
                Some(machine::Event::Tick { now: turn.now() })
            }
        }
    }

    fn polled(&self, turn: &mut Turn<'_>) {
        turn.poll_backoff = Backoff::new(SQS_RETRY_BASE, SQS_RETRY_CAP);
        self.status_mut(|s| s.last_successful_poll = Some(OffsetDateTime::now_utc()));
    }

    /// Decides on a received message and acts on the decision.
    async fn admit<'a>(&'a self, turn: &mut Turn<'a>, message: Received) -> Option<machine::Event> {
        let decoded = job::decode(&message.body, self.settings.allow_local_repos);
        let expected = self.status_mut(|s| s.gpus.count);
        let admission = decide::admit(
            turn.state.accepts_jobs(),
            decoded,
            self.settings.expect_gpus,
            || self.gpu.check(expected),
        );
        match admission {
            Admission::HandBack => {
                if let Err(e) = self
                    .queue
                    .set_visibility(&message.receipt_handle, Duration::ZERO)
                    .await
                {
                    tracing::warn!(error = %e, "could not hand a message back");
                }
                None
            }
            Admission::Reject(rejection) => {
                tracing::warn!(message_id = %message.message_id, receive_count = message.receive_count, reason = %rejection.reason, "message rejected; it goes to the dead-letter queue after the queue's maxReceiveCount");
                self.recorder.rejected(&message, &rejection).await;
                self.hand_back_later(&message, "the rejected message").await;
                None
            }
            Admission::HandBackForGpu { job, reason, unfit } => {
                tracing::warn!(job_id = %job.job_id, reason, "a GPU job, but no usable GPU here: handing it back");
                self.recorder.handed_back(&message, &job, &reason).await;
                self.hand_back_later(&message, "the GPU job").await;
                unfit.then(|| {
                    self.status_mut(|s| s.unhealthy = Some(format!("no usable GPU: {reason}")));
                    machine::Event::Unfit
                })
            }
            Admission::Start(job) => {
                turn.job_cancel = CancellationToken::new();
                turn.job = Some(Box::pin(self.run_job(
                    message,
                    *job,
                    turn.job_cancel.clone(),
                )));
                Some(machine::Event::JobStarted)
            }
        }
    }

    /// Makes a message visible again after `reject_retry`.
    async fn hand_back_later(&self, message: &Received, what: &str) {
        if let Err(e) = self
            .queue
            .set_visibility(&message.receipt_handle, self.settings.reject_retry)
            .await
        {
            tracing::warn!(error = %e, "could not hand {what} back");
        }
    }

    /// The systemd watchdog and the dead-man heartbeat file.
    fn beat(&self, turn: &mut Turn<'_>) {
        if let Some(every) = systemd::watchdog_every() {
            if turn.last_watchdog.elapsed() >= every {
                systemd::notify("WATCHDOG=1");
                turn.last_watchdog = Instant::now();
            }
        }
        if turn
            .last_beat
            .is_none_or(|b| b.elapsed() >= HEARTBEAT_FILE_EVERY)
        {
            if let Err(e) = systemd::beat(&self.settings.heartbeat_file) {
                tracing::warn!(path = %self.settings.heartbeat_file.display(), error = %e, "could not write the heartbeat file; the dead-man timer may power the instance off");
            }
            turn.last_beat = Some(Instant::now());
        }
    }

    async fn depth(&self) -> Option<janitor_services::aws::Depth> {
        match self.queue.depth().await {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the queue depth");
                None
            }
        }
    }

    /// Feeds one event through the machine and performs its actions; actions that ask a
    /// question (queue empty? capacity lowered?) feed their answer back in.
    async fn apply(&self, turn: &mut Turn<'_>, event: machine::Event, cfg: &machine::Config) {
        let mut pending = VecDeque::from([event]);
        while let Some(event) = pending.pop_front() {
            let (next, actions) = machine::next(turn.state, &event, cfg);
            if next != turn.state {
                tracing::debug!(from = ?turn.state, to = ?next, event = ?event, "state");
            }
            turn.state = next;
            for action in actions {
                match action {
                    Action::Protect | Action::Unprotect => {
                        if let Some(f) = &self.fleet {
                            if let Err(e) = f.protect(action == Action::Protect).await {
                                tracing::warn!(error = %e, "scale-in protection not changed");
                            }
                        }
                    }
                    Action::StopJob => {
                        tracing::info!(
                            "stopping the running job; its message goes back to the queue"
                        );
                        turn.job_cancel.cancel();
                    }
                    Action::CheckQueue => {
                        let empty = decide::nothing_waiting(self.depth().await);
                        pending.push_back(machine::Event::QueueChecked {
                            now: turn.now(),
                            empty,
                        });
                    }
                    Action::ScaleIn => {
                        let lowered = self.scale_in().await;
                        pending.push_back(machine::Event::ScaledIn {
                            now: turn.now(),
                            lowered,
                        });
                    }
                    Action::Heartbeat => {
                        if let Some(f) = &self.fleet {
                            match f.heartbeat().await {
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
                        if let Some(f) = &self.fleet {
                            if let Err(e) = f.mark_unhealthy().await {
                                tracing::warn!(error = %e, "could not mark the instance unhealthy");
                            }
                        }
                    }
                    Action::Record(event) => {
                        let detail = match (event, self.status_mut(|s| s.unhealthy.clone())) {
                            ("unhealthy", Some(reason)) => reason,
                            _ => format!("state {:?}", turn.state),
                        };
                        self.recorder.instance_event(event, &detail).await;
                    }
                }
            }
        }
    }

    /// Lowers the desired capacity by one, taking this idle instance out, when
    /// `decide::may_scale_in` allows it. `false` when it did not.
    async fn scale_in(&self) -> bool {
        let Some(f) = &self.fleet else { return false };
        let view = match f.group().await {
            Ok(Some(v)) => v,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the group; trying again after the next idle period");
                return false;
            }
        };
        if !decide::may_scale_in(&view) {
            tracing::info!(
                desired = view.desired,
                min = view.min,
                protected = view.protected,
                in_service = view.in_service,
                "idle, but the group may not shrink below its floor"
            );
            return false;
        }
        match f.lower_desired(view.desired).await {
            Ok(()) => {
                tracing::info!(from = view.desired, to = view.desired - 1, "idle with nothing waiting: lowered the desired capacity by one; the group's scale-in takes an idle instance");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not lower the desired capacity; trying again after the next idle period");
                false
            }
        }
    }

    async fn complete_lifecycle(&self) {
        let Some(f) = &self.fleet else { return };
        let mut backoff = Backoff::new(AWS_RETRY_BASE, AWS_RETRY_CAP);
        for attempt in 1..=LIFECYCLE_COMPLETE_ATTEMPTS {
            match f.complete().await {
                Ok(()) => {
                    tracing::info!("lifecycle action completed (CONTINUE)");
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

    /// One cleanup; its figures go to the status.
    pub(crate) async fn cleanup(&self, policy: &hygiene::Policy) {
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
        let disk = janitor_services::disk::disk(&self.settings.cache_dir);
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
        let stats = janitor_services::disk::disk(&self.settings.cache_dir)?;
        if hygiene::floors(&stats, policy).is_ok() {
            return None;
        }
        self.cleanup(policy).await;
        let stats = janitor_services::disk::disk(&self.settings.cache_dir)?;
        hygiene::floors(&stats, policy)
            .err()
            .map(|e| format!("after cleanup, {e}"))
    }
}
