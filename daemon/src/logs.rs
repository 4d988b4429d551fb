//! Job output shipping: a never-blocking line sink, and the CloudWatch Logs shipper that batches
//! lines within PutLogEvents' limits, keeps them in order and retries throttling.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use tokio::sync::mpsc;

use crate::backoff::Backoff;

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

/// Cuts a message to [`MAX_EVENT_BYTES`] on a character boundary. CloudWatch refuses empty
/// messages, so an empty line becomes a single space.
pub fn fit_message(line: &str) -> String {
    if line.is_empty() {
        return " ".to_string();
    }
    if line.len() <= MAX_EVENT_BYTES {
        return line.to_string();
    }
    const MARK: &str = " [truncated]";
    let mut end = MAX_EVENT_BYTES - MARK.len();
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &line[..end])
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
        let event = Event {
            timestamp_ms: ms,
            message: fit_message(line),
        };
        if self.tx.try_send(event).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Ships one job's lines to `/janitor-runner` (or the configured group) in a background task.
pub struct CloudWatchShipper {
    sink: Arc<CloudWatchSink>,
    task: tokio::task::JoinHandle<ShipStats>,
}

impl CloudWatchShipper {
    /// Creates the stream if needed and starts shipping. Errors creating the stream are logged;
    /// the job still runs and its lines are counted as failed.
    pub fn start(client: aws_sdk_cloudwatchlogs::Client, group: String, stream: String) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let counters = Arc::new(Counters {
            dropped: AtomicU64::new(0),
        });
        let sink = Arc::new(CloudWatchSink {
            tx,
            counters: counters.clone(),
            last_ts: Mutex::new(0),
        });
        let task = tokio::spawn(ship(client, group, stream, rx, counters));
        CloudWatchShipper { sink, task }
    }

    pub fn sink(&self) -> Arc<CloudWatchSink> {
        self.sink.clone()
    }

    /// Stops taking lines, sends what is buffered, and waits at most `limit` for it.
    pub async fn finish(self, limit: Duration) -> ShipStats {
        let CloudWatchShipper { sink, task } = self;
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

async fn ship(
    client: aws_sdk_cloudwatchlogs::Client,
    group: String,
    stream: String,
    mut rx: mpsc::Receiver<Event>,
    counters: Arc<Counters>,
) -> ShipStats {
    let mut stats = ShipStats::default();
    if let Err(e) = create_stream(&client, &group, &stream).await {
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
                        put(&client, &group, &stream, batch, &mut stats).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if let Some(batch) = batcher.take() {
                    put(&client, &group, &stream, batch, &mut stats).await;
                }
            }
        }
    }
    stats.dropped = counters.dropped.load(Ordering::Relaxed);
    if stats.dropped > 0 {
        let ts = batcher_last_ts(&batcher);
        let _ = batcher.push(Event {
            timestamp_ms: ts,
            message: format!("[janitor] {} output lines were dropped: the job wrote faster than CloudWatch took them", stats.dropped),
        });
    }
    if let Some(batch) = batcher.take() {
        put(&client, &group, &stream, batch, &mut stats).await;
    }
    stats
}

fn batcher_last_ts(b: &Batcher) -> i64 {
    b.events.last().map(|e| e.timestamp_ms).unwrap_or_else(|| {
        (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
    })
}

async fn create_stream(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
) -> Result<(), String> {
    use aws_sdk_cloudwatchlogs::operation::create_log_stream::CreateLogStreamError;
    match client
        .create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => match e.as_service_error() {
            Some(CreateLogStreamError::ResourceAlreadyExistsException(_)) => Ok(()),
            _ => Err(aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e).to_string()),
        },
    }
}

async fn put(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    batch: Vec<Event>,
    stats: &mut ShipStats,
) {
    let count = batch.len() as u64;
    let events: Vec<InputLogEvent> = batch
        .into_iter()
        .filter_map(|e| {
            InputLogEvent::builder()
                .timestamp(e.timestamp_ms)
                .message(e.message)
                .build()
                .ok()
        })
        .collect();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    for attempt in 1..=LOG_PUT_ATTEMPTS {
        let result = client
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .set_log_events(Some(events.clone()))
            .send()
            .await;
        match result {
            Ok(out) => {
                if let Some(rejected) = out.rejected_log_events_info() {
                    tracing::warn!(log_stream = %stream, ?rejected, "CloudWatch rejected some log events");
                }
                stats.sent += count;
                return;
            }
            Err(e) => {
                use aws_sdk_cloudwatchlogs::operation::put_log_events::PutLogEventsError;
                if let Some(PutLogEventsError::ResourceNotFoundException(_)) = e.as_service_error()
                {
                    let _ = create_stream(client, group, stream).await;
                }
                let text = aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e).to_string();
                if attempt == LOG_PUT_ATTEMPTS {
                    tracing::error!(log_stream = %stream, lines = count, error = %text, "giving up on a batch of job output");
                    stats.failed += count;
                    return;
                }
                tracing::warn!(log_stream = %stream, attempt, error = %text, "PutLogEvents failed; retrying");
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
    fn messages_are_cut_and_never_empty() {
        assert_eq!(fit_message(""), " ");
        let long = "é".repeat(MAX_EVENT_BYTES);
        let cut = fit_message(&long);
        assert!(cut.len() <= MAX_EVENT_BYTES && cut.ends_with("[truncated]"));
    }
}
