//! Job output: the never-blocking `LogSink` a job writes lines to, the `LogApi` trait of the log
//! service (CloudWatch Logs' CreateLogStream and PutLogEvents) with its AWS implementation, and
//! the shipper that batches lines within PutLogEvents' limits, keeps them in order and retries
//! what a retry can help.

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use tokio::sync::mpsc;

use crate::backoff::Backoff;
use crate::error::{ErrorKind, ServiceError};

/// PutLogEvents: at most this many events per call.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// PutLogEvents: at most this many bytes per call, counting [`EVENT_OVERHEAD`] per event.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// PutLogEvents counts 26 bytes per event on top of its message.
pub const EVENT_OVERHEAD: usize = 26;
/// Longer messages are cut to this many bytes (CloudWatch's event limit is 256 KiB).
pub const MAX_EVENT_BYTES: usize = 256 * 1024 - EVENT_OVERHEAD;
/// A partial batch is sent at least this often.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Lines waiting to be shipped; beyond this, lines are dropped and counted, the job never waits.
pub const CHANNEL_CAPACITY: usize = 50_000;
/// Attempts per batch before it is given up on (throttling, network errors).
pub const LOG_PUT_ATTEMPTS: u32 = 6;

/// Where a job's output lines go. `line` never blocks.
pub trait LogSink: Send + Sync {
    fn line(&self, line: &str);
}

/// Counts the lines and bytes that pass through to another sink.
pub struct Counting<S> {
    pub inner: S,
    lines: AtomicU64,
    bytes: AtomicU64,
}

impl<S: LogSink> Counting<S> {
    pub fn new(inner: S) -> Self {
        Counting {
            inner,
            lines: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// (lines, bytes) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.lines.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

impl<S: LogSink> LogSink for Counting<S> {
    fn line(&self, line: &str) {
        self.lines.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
        self.inner.line(line);
    }
}

impl<S: LogSink + ?Sized> LogSink for Arc<S> {
    fn line(&self, line: &str) {
        self.as_ref().line(line);
    }
}

/// A sink that discards, for steps whose output does not matter.
pub struct NullSink;

impl LogSink for NullSink {
    fn line(&self, _line: &str) {}
}

/// Writes lines to a file and, optionally, echoes them to standard error (`--local` mode).
pub struct FileSink {
    file: Mutex<std::io::BufWriter<std::fs::File>>,
    echo: bool,
}

impl FileSink {
    pub fn create(path: &std::path::Path, echo: bool) -> std::io::Result<Self> {
        Ok(FileSink {
            file: Mutex::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
            echo,
        })
    }

    pub fn flush(&self) {
        if let Ok(mut f) = self.file.lock() {
            let _ = f.flush();
        }
    }
}

impl LogSink for FileSink {
    fn line(&self, line: &str) {
        if let Ok(mut f) = self.file.lock() {
            let _ = writeln!(f, "{line}");
        }
        if self.echo {
            eprintln!("    {line}");
        }
    }
}

/// One event, already cut to size, with a timestamp that never goes backwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub timestamp_ms: i64,
    pub message: String,
}

/// The log service, as narrow as the shipper uses it.
pub trait LogApi: Send + Sync + Clone + 'static {
    /// Creates the stream; one that exists already is not an error.
    fn create_stream(
        &self,
        group: &str,
        stream: &str,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Sends one batch, in order. A missing stream is a [`ErrorKind::NotFound`].
    fn put_events(
        &self,
        group: &str,
        stream: &str,
        events: &[Event],
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
}

/// CloudWatch Logs.
#[derive(Clone)]
pub struct CloudWatchLogs {
    pub client: aws_sdk_cloudwatchlogs::Client,
}

impl LogApi for CloudWatchLogs {
    async fn create_stream(&self, group: &str, stream: &str) -> Result<(), ServiceError> {
        use aws_sdk_cloudwatchlogs::operation::create_log_stream::CreateLogStreamError;
        match self
            .client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(CreateLogStreamError::ResourceAlreadyExistsException(_)) => Ok(()),
                _ => Err(ServiceError::aws(
                    "CloudWatch Logs",
                    "CreateLogStream",
                    format!("{group}/{stream}"),
                    e,
                )),
            },
        }
    }

    async fn put_events(
        &self,
        group: &str,
        stream: &str,
        events: &[Event],
    ) -> Result<(), ServiceError> {
        let events: Vec<InputLogEvent> = events
            .iter()
            .filter_map(|e| {
                InputLogEvent::builder()
                    .timestamp(e.timestamp_ms)
                    .message(e.message.clone())
                    .build()
                    .ok()
            })
            .collect();
        let out = self
            .client
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .set_log_events(Some(events))
            .send()
            .await
            .map_err(|e| {
                ServiceError::aws(
                    "CloudWatch Logs",
                    "PutLogEvents",
                    format!("{group}/{stream}"),
                    e,
                )
            })?;
        if let Some(rejected) = out.rejected_log_events_info() {
            tracing::warn!(log_stream = %stream, ?rejected, "CloudWatch rejected some log events");
        }
        Ok(())
    }
}

/// Splits a line into messages of at most [`MAX_EVENT_BYTES`], on character boundaries, in
/// order: a long line is split, never cut. CloudWatch refuses empty messages, so an empty line
/// becomes a single space.
pub fn split_message(line: &str) -> Vec<String> {
    if line.is_empty() {
        return vec![" ".to_string()];
    }
    let mut out = Vec::with_capacity(line.len() / MAX_EVENT_BYTES + 1);
    let mut rest = line;
    while rest.len() > MAX_EVENT_BYTES {
        let mut end = MAX_EVENT_BYTES;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        out.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    out.push(rest.to_string());
    out
}

/// Groups events into batches that fit one PutLogEvents call. Pure: no I/O.
#[derive(Debug, Default)]
pub struct Batcher {
    events: Vec<Event>,
    bytes: usize,
}

impl Batcher {
    /// Adds an event; returns the batch that had to be closed to make room, if any.
    pub fn push(&mut self, event: Event) -> Option<Vec<Event>> {
        let size = event.message.len() + EVENT_OVERHEAD;
        let full = self.events.len() >= MAX_BATCH_EVENTS || self.bytes + size > MAX_BATCH_BYTES;
        let closed = if full { self.take() } else { None };
        self.bytes += size;
        self.events.push(event);
        closed
    }

    /// The open batch, if it has anything.
    pub fn take(&mut self) -> Option<Vec<Event>> {
        self.bytes = 0;
        (!self.events.is_empty()).then(|| std::mem::take(&mut self.events))
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// What happened to a job's output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShipStats {
    pub sent: u64,
    pub dropped: u64,
    pub failed: u64,
}

struct Counters {
    dropped: AtomicU64,
}

/// The sending half of a CloudWatch shipper: a [`LogSink`] for one job's stream.
pub struct CloudWatchSink {
    tx: mpsc::Sender<Event>,
    counters: Arc<Counters>,
    last_ts: Mutex<i64>,
}

impl LogSink for CloudWatchSink {
    fn line(&self, line: &str) {
        let now = time::OffsetDateTime::now_utc();
        let mut ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        if let Ok(mut last) = self.last_ts.lock() {
            ms = ms.max(*last);
            *last = ms;
        }
        for message in split_message(line) {
            let event = Event {
                timestamp_ms: ms,
                message,
            };
            if self.tx.try_send(event).is_err() {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Ships one job's lines to `/janitor-runner` (or the configured group) in a background task.
pub struct Shipper {
    sink: Arc<CloudWatchSink>,
    task: tokio::task::JoinHandle<ShipStats>,
}

impl Shipper {
    /// Creates the stream if needed and starts shipping. Errors creating the stream are logged;
    /// the job still runs and its lines are counted as failed.
    pub fn start<L: LogApi>(api: L, group: String, stream: String) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let counters = Arc::new(Counters {
            dropped: AtomicU64::new(0),
        });
        let sink = Arc::new(CloudWatchSink {
            tx,
            counters: counters.clone(),
            last_ts: Mutex::new(0),
        });
        let task = tokio::spawn(ship(api, group, stream, rx, counters));
        Shipper { sink, task }
    }

    pub fn sink(&self) -> Arc<CloudWatchSink> {
        self.sink.clone()
    }

    /// Stops taking lines, sends what is buffered, and waits at most `limit` for it.
    pub async fn finish(self, limit: Duration) -> ShipStats {
        let Shipper { sink, task } = self;
        let dropped = sink.counters.dropped.load(Ordering::Relaxed);
        drop(sink);
        let abort = task.abort_handle();
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "log shipper task failed");
                ShipStats {
                    dropped,
                    ..ShipStats::default()
                }
            }
            Err(_) => {
                abort.abort();
                tracing::warn!(
                    limit_s = limit.as_secs(),
                    "log shipping did not finish in time; the rest of the output is lost"
                );
                ShipStats {
                    dropped,
                    ..ShipStats::default()
                }
            }
        }
    }
}

async fn ship<L: LogApi>(
    api: L,
    group: String,
    stream: String,
    mut rx: mpsc::Receiver<Event>,
    counters: Arc<Counters>,
) -> ShipStats {
    let mut stats = ShipStats::default();
    if let Err(e) = api.create_stream(&group, &stream).await {
        tracing::error!(log_group = %group, log_stream = %stream, error = %e, "cannot create the log stream; job output will not reach CloudWatch");
    }
    let mut batcher = Batcher::default();
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(event) => {
                    if let Some(batch) = batcher.push(event) {
                        put(&api, &group, &stream, batch, &mut stats).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if let Some(batch) = batcher.take() {
                    put(&api, &group, &stream, batch, &mut stats).await;
                }
            }
        }
    }
    stats.dropped = counters.dropped.load(Ordering::Relaxed);
    let ts = batcher_last_ts(&batcher);
    if let Some(batch) = batcher.take() {
        put(&api, &group, &stream, batch, &mut stats).await;
    }
    if stats.dropped > 0 {
        // Said in the stream too; not counted among the job's own events.
        let notice = Event {
            timestamp_ms: ts,
            message: format!("[janitor] {} output events were dropped: the job wrote faster than CloudWatch took them", stats.dropped),
        };
        put(
            &api,
            &group,
            &stream,
            vec![notice],
            &mut ShipStats::default(),
        )
        .await;
    }
    stats
}

fn batcher_last_ts(b: &Batcher) -> i64 {
    b.events.last().map(|e| e.timestamp_ms).unwrap_or_else(|| {
        (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
    })
}

async fn put<L: LogApi>(
    api: &L,
    group: &str,
    stream: &str,
    batch: Vec<Event>,
    stats: &mut ShipStats,
) {
    let count = batch.len() as u64;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    for attempt in 1..=LOG_PUT_ATTEMPTS {
        match api.put_events(group, stream, &batch).await {
            Ok(()) => {
                stats.sent += count;
                return;
            }
            Err(e) => {
                if e.kind == ErrorKind::NotFound {
                    let _ = api.create_stream(group, stream).await;
                } else if !e.retryable() {
                    tracing::error!(log_stream = %stream, lines = count, error = %e, "CloudWatch refused a batch of job output");
                    stats.failed += count;
                    return;
                }
                if attempt == LOG_PUT_ATTEMPTS {
                    tracing::error!(log_stream = %stream, lines = count, error = %e, "giving up on a batch of job output");
                    stats.failed += count;
                    return;
                }
                tracing::warn!(log_stream = %stream, attempt, error = %e, "PutLogEvents failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: usize) -> Event {
        Event {
            timestamp_ms: 1,
            message: "x".repeat(n),
        }
    }

    #[test]
    fn batches_respect_event_count() {
        let mut b = Batcher::default();
        let mut closed = Vec::new();
        for _ in 0..(MAX_BATCH_EVENTS * 2 + 5) {
            closed.extend(b.push(ev(1)));
        }
        assert_eq!(closed.len(), 2);
        assert!(closed.iter().all(|c| c.len() == MAX_BATCH_EVENTS));
        assert_eq!(b.take().map(|v| v.len()), Some(5));
        assert!(b.is_empty());
    }

    #[test]
    fn batches_respect_bytes() {
        let mut b = Batcher::default();
        let big = MAX_EVENT_BYTES;
        let mut closed = Vec::new();
        for _ in 0..9 {
            closed.extend(b.push(ev(big)));
        }
        for batch in &closed {
            let bytes: usize = batch.iter().map(|e| e.message.len() + EVENT_OVERHEAD).sum();
            assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
        }
        assert_eq!(
            closed.iter().map(Vec::len).sum::<usize>() + b.take().map_or(0, |v| v.len()),
            9
        );
    }

    #[test]
    fn long_lines_are_split_in_order_and_never_empty() {
        assert_eq!(split_message(""), [" "]);
        assert_eq!(split_message("short"), ["short"]);
        // A 1 MiB line of two-byte characters: split on boundaries, nothing lost.
        let long = "é".repeat(512 * 1024);
        let parts = split_message(&long);
        assert_eq!(parts.len(), 5);
        assert!(parts
            .iter()
            .all(|p| p.len() <= MAX_EVENT_BYTES && !p.is_empty()));
        assert_eq!(parts.concat(), long);
    }

    /// Fails the first `fail` puts with `kind`, then keeps what it is sent.
    #[derive(Clone)]
    struct Flaky {
        kind: ErrorKind,
        fail: Arc<std::sync::atomic::AtomicU32>,
        kept: Arc<Mutex<Vec<String>>>,
    }

    impl LogApi for Flaky {
        async fn create_stream(&self, _g: &str, _s: &str) -> Result<(), ServiceError> {
            Ok(())
        }
        async fn put_events(&self, g: &str, s: &str, events: &[Event]) -> Result<(), ServiceError> {
            let left = self.fail.load(Ordering::SeqCst);
            if left > 0 {
                self.fail.store(left - 1, Ordering::SeqCst);
                return Err(ServiceError::new(
                    "CloudWatch Logs",
                    "PutLogEvents",
                    format!("{g}/{s}"),
                    self.kind,
                    "on cue",
                ));
            }
            self.kept
                .lock()
                .unwrap()
                .extend(events.iter().map(|e| e.message.clone()));
            Ok(())
        }
    }

    async fn ship_three(kind: ErrorKind, fail: u32) -> (ShipStats, Vec<String>) {
        let api = Flaky {
            kind,
            fail: Arc::new(std::sync::atomic::AtomicU32::new(fail)),
            kept: Arc::default(),
        };
        let shipper = Shipper::start(api.clone(), "g".into(), "s".into());
        let sink = shipper.sink();
        for l in ["a", "b", "c"] {
            sink.line(l);
        }
        drop(sink);
        let stats = shipper.finish(Duration::from_secs(60)).await;
        let kept = api.kept.lock().unwrap().clone();
        (stats, kept)
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_retried_and_lines_arrive_in_order() {
        let (stats, kept) = ship_three(ErrorKind::Throttled, 2).await;
        assert_eq!((stats.sent, stats.failed), (3, 0));
        assert_eq!(kept, ["a", "b", "c"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_past_the_attempts_counts_the_lines_as_failed() {
        let (stats, kept) = ship_three(ErrorKind::Unavailable, LOG_PUT_ATTEMPTS).await;
        // The first batch used every attempt; later batches (if the lines were split) went.
        assert!(stats.failed >= 1, "{stats:?}");
        assert_eq!(stats.sent + stats.failed, 3);
        assert_eq!(kept.len() as u64, stats.sent);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_not_retried() {
        let (stats, kept) = ship_three(ErrorKind::Rejected, 1).await;
        // A retry would have succeeded (only one refusal): the refused lines count as failed.
        assert!(
            stats.failed >= 1,
            "the refused batch is not sent again: {stats:?}"
        );
        assert_eq!(stats.sent + stats.failed, 3);
        assert_eq!(kept.len() as u64, stats.sent);
    }
}
