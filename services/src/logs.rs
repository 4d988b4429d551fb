//! Job output: the never-blocking `LogSink` a job writes lines to (through a spool file on the
//! cache volume), the `LogApi` trait of the log
//! service (CloudWatch Logs' CreateLogStream and PutLogEvents) with its AWS implementation, and
//! the shipper that batches lines within PutLogEvents' limits, keeps them in order and retries
//! what a retry can help.

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;

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
/// Attempts per batch before it is given up on (throttling, network errors).
pub const LOG_PUT_ATTEMPTS: u32 = 6;

/// Where a job's output lines go. `line` never blocks.
pub trait LogSink: Send + Sync {
    fn line(&self, line: &str);
}

/// Lines, bytes and CloudWatch events of some output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub lines: u64,
    pub bytes: u64,
    /// A line over [`MAX_EVENT_BYTES`] is several events.
    pub events: u64,
}

impl Tally {
    fn add(&mut self, line: &str) {
        self.lines += 1;
        self.bytes += line.len() as u64 + 1;
        self.events += event_count(line);
    }
}

/// The step a line belongs to, from the `[step] ` prefix the pipeline puts on it.
pub fn step_of(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let (name, _) = rest.split_once("] ")?;
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')).then_some(name)
}

#[derive(Default)]
struct Tallies {
    total: Tally,
    steps: Vec<(String, Tally)>,
}

/// Counts what passes through to another sink, in all and per step.
pub struct Counting<S> {
    pub inner: S,
    tallies: Mutex<Tallies>,
}

impl<S: LogSink> Counting<S> {
    pub fn new(inner: S) -> Self {
        Counting {
            inner,
            tallies: Mutex::default(),
        }
    }

    pub fn total(&self) -> Tally {
        self.tallies.lock().map(|t| t.total).unwrap_or_default()
    }

    /// Each step's tally, in the order the steps first wrote.
    pub fn steps(&self) -> Vec<(String, Tally)> {
        self.tallies
            .lock()
            .map(|t| t.steps.clone())
            .unwrap_or_default()
    }
}

impl<S: LogSink> LogSink for Counting<S> {
    fn line(&self, line: &str) {
        if let Ok(mut t) = self.tallies.lock() {
            t.total.add(line);
            if let Some(step) = step_of(line) {
                match t.steps.iter_mut().find(|(s, _)| s == step) {
                    Some((_, tally)) => tally.add(line),
                    None => {
                        let mut tally = Tally::default();
                        tally.add(line);
                        t.steps.push((step.to_string(), tally));
                    }
                }
            }
        }
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
    /// Which step wrote it: an index into the shipper's step names (0: none).
    pub step: u16,
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

/// How many events [`split_message`] makes of `line`, without making them.
pub fn event_count(line: &str) -> u64 {
    let mut count = 1;
    let mut rest = line;
    while rest.len() > MAX_EVENT_BYTES {
        let mut end = MAX_EVENT_BYTES;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        rest = &rest[end..];
        count += 1;
    }
    count
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

/// What happened to a job's output on its way to the log group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipStats {
    pub sent: u64,
    /// Events not shipped: shipping had not caught up when its time after the job ran out,
    /// or the spool could not be written.
    pub dropped: u64,
    /// Events CloudWatch did not take after the retries.
    pub failed: u64,
    /// Why events were dropped, when some were.
    pub dropped_reason: Option<String>,
    /// Each step's events: (name, sent, failed).
    pub per_step: Vec<(String, u64, u64)>,
    /// From the first line read back to the last batch answered.
    pub busy: Duration,
}

/// Shared between the shipper's task and `finish`, so the counts survive the task's abort.
#[derive(Default)]
struct Progress {
    lines_read: AtomicU64,
    events_read: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    /// Step names (index 0 is none) and each one's events (sent, failed).
    steps: Mutex<Vec<(String, u64, u64)>>,
}

impl Progress {
    fn step_index(&self, step: Option<&str>) -> u16 {
        let Some(step) = step else { return 0 };
        let Ok(mut steps) = self.steps.lock() else {
            return 0;
        };
        if steps.is_empty() {
            steps.push((String::new(), 0, 0));
        }
        match steps.iter().position(|(s, _, _)| s == step) {
            Some(i) => u16::try_from(i).unwrap_or(0),
            None if steps.len() < usize::from(u16::MAX) => {
                steps.push((step.to_string(), 0, 0));
                u16::try_from(steps.len() - 1).unwrap_or(0)
            }
            None => 0,
        }
    }

    fn tally(&self, batch: &[Event], sent: bool) {
        if let Ok(mut steps) = self.steps.lock() {
            for e in batch {
                if let Some((_, s, f)) = steps.get_mut(usize::from(e.step)) {
                    if sent {
                        *s += 1;
                    } else {
                        *f += 1;
                    }
                }
            }
        }
    }

    /// Each step's events: (name, sent, failed).
    fn per_step(&self) -> Vec<(String, u64, u64)> {
        self.steps
            .lock()
            .map(|s| s.iter().skip(1).cloned().collect())
            .unwrap_or_default()
    }
}

struct SpoolWriter {
    file: Option<std::io::BufWriter<std::fs::File>>,
    last_ts: i64,
    lines: u64,
    lost: u64,
    error: Option<String>,
}

/// The writing half of a shipper: every line goes, timestamped, to the job's spool file on
/// the cache volume, which the shipper reads back. Never blocks on the log service and never
/// drops a line for being fast: the spool is as large as the disk.
pub struct SpoolSink {
    writer: Mutex<SpoolWriter>,
}

impl SpoolSink {
    fn create(path: &std::path::Path) -> Self {
        let (file, error) = match std::fs::File::create(path) {
            Ok(f) => (Some(std::io::BufWriter::with_capacity(1 << 16, f)), None),
            Err(e) => (None, Some(format!("cannot create {}: {e}", path.display()))),
        };
        SpoolSink {
            writer: Mutex::new(SpoolWriter {
                file,
                last_ts: 0,
                lines: 0,
                lost: 0,
                error,
            }),
        }
    }

    /// Writes out what is buffered, so the reader sees every line written so far.
    fn flush(&self) {
        if let Ok(mut w) = self.writer.lock() {
            let failed = w.file.as_mut().and_then(|f| f.flush().err());
            if let Some(e) = failed {
                w.error
                    .get_or_insert_with(|| format!("cannot write the output spool: {e}"));
            }
        }
    }

    /// (lines written, lines lost, why lost).
    fn written(&self) -> (u64, u64, Option<String>) {
        self.writer
            .lock()
            .map(|w| (w.lines, w.lost, w.error.clone()))
            .unwrap_or_default()
    }
}

impl LogSink for SpoolSink {
    fn line(&self, line: &str) {
        let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let Ok(mut w) = self.writer.lock() else {
            return;
        };
        let ms = now.max(w.last_ts);
        w.last_ts = ms;
        // One record per line: text with a newline in it is several lines.
        for part in line.split('\n') {
            let wrote = w.file.as_mut().map(|f| writeln!(f, "{ms} {part}"));
            match wrote {
                Some(Ok(())) => w.lines += 1,
                Some(Err(e)) => {
                    w.lost += 1;
                    w.error
                        .get_or_insert_with(|| format!("cannot write the output spool: {e}"));
                }
                None => w.lost += 1,
            }
        }
    }
}

/// Ships one job's lines to `/janitor-runner` (or the configured group) from its spool file,
/// in order, in a background task.
pub struct Shipper {
    sink: Arc<SpoolSink>,
    done: tokio::sync::watch::Sender<bool>,
    progress: Arc<Progress>,
    task: tokio::task::JoinHandle<ShipStats>,
}

impl Shipper {
    /// Creates the spool at `spool` and starts shipping it. Errors creating the stream or the
    /// spool are logged and counted; the job still runs.
    pub fn start<L: LogApi>(
        api: L,
        group: String,
        stream: String,
        spool: std::path::PathBuf,
    ) -> Self {
        let sink = Arc::new(SpoolSink::create(&spool));
        let (done, done_rx) = tokio::sync::watch::channel(false);
        let progress = Arc::new(Progress::default());
        let task = tokio::spawn(ship(ShipTask {
            api,
            group,
            stream,
            spool,
            sink: sink.clone(),
            done: done_rx,
            progress: progress.clone(),
        }));
        Shipper {
            sink,
            done,
            progress,
            task,
        }
    }

    pub fn sink(&self) -> Arc<SpoolSink> {
        self.sink.clone()
    }

    /// Writes out what the sink buffers: once the job writes no more, the spool is whole.
    pub fn flush(&self) {
        self.sink.flush();
    }

    /// Ships what is left and waits at most `limit` for it; what is still unshipped then is
    /// counted as dropped, with the reason.
    pub async fn finish(self, limit: Duration) -> ShipStats {
        let Shipper {
            sink,
            done,
            progress,
            task,
            ..
        } = self;
        let _ = done.send(true);
        let abort = task.abort_handle();
        let shipped = match tokio::time::timeout(limit, task).await {
            Ok(Ok(stats)) => Some(stats),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "log shipper task failed");
                None
            }
            Err(_) => {
                abort.abort();
                tracing::warn!(
                    limit_s = limit.as_secs(),
                    "log shipping did not finish in time; the rest of the output is only in the archive"
                );
                None
            }
        };
        let (written, lost, spool_error) = sink.written();
        let mut stats = shipped.unwrap_or_else(|| {
            let read = progress.lines_read.load(Ordering::Relaxed);
            let sent = progress.sent.load(Ordering::Relaxed);
            let failed = progress.failed.load(Ordering::Relaxed);
            let pending = progress
                .events_read
                .load(Ordering::Relaxed)
                .saturating_sub(sent + failed);
            ShipStats {
                sent,
                failed,
                dropped: written.saturating_sub(read) + pending,
                dropped_reason: Some(format!(
                    "shipping had not caught up {} s after the job ended",
                    limit.as_secs()
                )),
                per_step: Vec::new(),
                busy: Duration::ZERO,
            }
        });
        stats.per_step = progress.per_step();
        if lost > 0 {
            stats.dropped += lost;
            stats.dropped_reason =
                Some(spool_error.unwrap_or_else(|| "the output spool could not be written".into()));
        }
        stats
    }
}

/// Writes the spool's lines (without their timestamps) gzipped to `dest`, off the async
/// threads; returns the compressed size.
pub async fn archive(spool: &std::path::Path, dest: &std::path::Path) -> std::io::Result<u64> {
    let (spool, dest) = (spool.to_path_buf(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let input = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&spool)?);
        let out = std::io::BufWriter::new(std::fs::File::create(&dest)?);
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        for record in input.split(b'\n') {
            let record = record?;
            let text = match record.iter().position(|b| *b == b' ') {
                Some(at) => &record[at + 1..],
                None => &record[..],
            };
            gz.write_all(text)?;
            gz.write_all(b"\n")?;
        }
        let mut out = gz.finish()?;
        out.flush()?;
        Ok(std::fs::metadata(&dest)?.len())
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The lines of an archive [`archive`] wrote.
pub fn read_archive(gz: &[u8]) -> std::io::Result<String> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut text)?;
    Ok(text)
}

struct ShipTask<L> {
    api: L,
    group: String,
    stream: String,
    spool: std::path::PathBuf,
    sink: Arc<SpoolSink>,
    done: tokio::sync::watch::Receiver<bool>,
    progress: Arc<Progress>,
}

/// How often the spool is looked at again when the shipper has caught up.
const SPOOL_POLL: Duration = Duration::from_millis(100);

async fn ship<L: LogApi>(t: ShipTask<L>) -> ShipStats {
    use std::io::Read;
    let ShipTask {
        api,
        group,
        stream,
        spool,
        sink,
        mut done,
        progress,
    } = t;
    let mut stats = ShipStats::default();
    if let Err(e) = api.create_stream(&group, &stream).await {
        tracing::error!(log_group = %group, log_stream = %stream, error = %e, "cannot create the log stream; job output will not reach CloudWatch");
    }
    let mut file = match std::fs::File::open(&spool) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(spool = %spool.display(), error = %e, "cannot read the output spool; job output will not reach CloudWatch");
            None
        }
    };
    // One batch in flight while the next is read and cut: batches still go one after
    // another, in order.
    let mut in_flight: Option<tokio::task::JoinHandle<(u64, u64)>> = None;
    let send = |batch: Vec<Event>, in_flight: &mut Option<tokio::task::JoinHandle<(u64, u64)>>| {
        let (api, group, stream, progress) =
            (api.clone(), group.clone(), stream.clone(), progress.clone());
        let previous = in_flight.take();
        *in_flight = Some(tokio::spawn(async move {
            let (mut sent, mut failed) = match previous {
                Some(p) => p.await.unwrap_or((0, 0)),
                None => (0, 0),
            };
            let (s, f) = put(&api, &group, &stream, &progress, batch).await;
            sent += s;
            failed += f;
            (sent, failed)
        }));
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut carry: Vec<u8> = Vec::new();
    let mut batcher = Batcher::default();
    let mut last_put = tokio::time::Instant::now();
    let mut first_read: Option<tokio::time::Instant> = None;
    loop {
        // Read `done` before the flush: every line written before it was set is then read.
        let finishing = *done.borrow_and_update();
        sink.flush();
        // A read of the page cache; at most 1 MiB at a time.
        let n = file.as_mut().map_or(0, |f| f.read(&mut buf).unwrap_or(0));
        if n > 0 {
            first_read.get_or_insert_with(tokio::time::Instant::now);
            carry.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(pos) = carry[start..].iter().position(|b| *b == b'\n') {
                let record = String::from_utf8_lossy(&carry[start..start + pos]).into_owned();
                start += pos + 1;
                let (ms, text) = match record.split_once(' ') {
                    Some((ms, text)) => (ms.parse().unwrap_or(0), text),
                    None => (0, record.as_str()),
                };
                progress.lines_read.fetch_add(1, Ordering::Relaxed);
                let step = progress.step_index(step_of(text));
                for message in split_message(text) {
                    progress.events_read.fetch_add(1, Ordering::Relaxed);
                    let event = Event {
                        timestamp_ms: ms,
                        message,
                        step,
                    };
                    if let Some(batch) = batcher.push(event) {
                        // Backpressure: wait for the batch before the one just cut.
                        if let Some(prev) = in_flight.take() {
                            let (s, f) = prev.await.unwrap_or((0, 0));
                            stats.sent += s;
                            stats.failed += f;
                        }
                        send(batch, &mut in_flight);
                        last_put = tokio::time::Instant::now();
                    }
                }
            }
            carry.drain(..start);
            continue;
        }
        if finishing {
            break;
        }
        if !batcher.is_empty() && last_put.elapsed() >= FLUSH_INTERVAL {
            if let Some(batch) = batcher.take() {
                send(batch, &mut in_flight);
            }
            last_put = tokio::time::Instant::now();
        }
        tokio::select! {
            () = tokio::time::sleep(SPOOL_POLL) => {}
            _ = done.changed() => {}
        }
    }
    if let Some(batch) = batcher.take() {
        send(batch, &mut in_flight);
    }
    if let Some(last) = in_flight.take() {
        let (s, f) = last.await.unwrap_or((0, 0));
        stats.sent += s;
        stats.failed += f;
    }
    stats.busy = first_read.map_or(Duration::ZERO, |t| t.elapsed());
    stats
}

/// Sends one batch, retrying what a retry can help; returns (sent, failed) events.
async fn put<L: LogApi>(
    api: &L,
    group: &str,
    stream: &str,
    progress: &Progress,
    batch: Vec<Event>,
) -> (u64, u64) {
    let count = batch.len() as u64;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    for attempt in 1..=LOG_PUT_ATTEMPTS {
        match api.put_events(group, stream, &batch).await {
            Ok(()) => {
                progress.sent.fetch_add(count, Ordering::Relaxed);
                progress.tally(&batch, true);
                return (count, 0);
            }
            Err(e) => {
                let last = attempt == LOG_PUT_ATTEMPTS;
                if e.kind == ErrorKind::NotFound {
                    let _ = api.create_stream(group, stream).await;
                } else if !e.retryable() || last {
                    if e.retryable() {
                        tracing::error!(log_stream = %stream, lines = count, error = %e, "giving up on a batch of job output");
                    } else {
                        tracing::error!(log_stream = %stream, lines = count, error = %e, "CloudWatch refused a batch of job output");
                    }
                    progress.failed.fetch_add(count, Ordering::Relaxed);
                    progress.tally(&batch, false);
                    return (0, count);
                }
                if last {
                    progress.failed.fetch_add(count, Ordering::Relaxed);
                    progress.tally(&batch, false);
                    return (0, count);
                }
                tracing::warn!(log_stream = %stream, attempt, error = %e, "PutLogEvents failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
    (0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: usize) -> Event {
        Event {
            timestamp_ms: 1,
            message: "x".repeat(n),
            step: 0,
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
        assert_eq!(event_count(&long), parts.len() as u64);
        assert_eq!(event_count(""), 1);
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
        let dir = tempfile::tempdir().unwrap();
        let shipper = Shipper::start(api.clone(), "g".into(), "s".into(), dir.path().join("o"));
        let sink = shipper.sink();
        for l in ["a", "b", "c"] {
            sink.line(l);
        }
        drop(sink);
        let stats = shipper.finish(Duration::from_secs(60)).await;
        let kept = api.kept.lock().unwrap().clone();
        (stats, kept)
    }

    /// Keeps every event, each put taking `delay`.
    #[derive(Clone)]
    struct Slow {
        delay: Duration,
        kept: Arc<Mutex<Vec<String>>>,
    }

    impl LogApi for Slow {
        async fn create_stream(&self, _g: &str, _s: &str) -> Result<(), ServiceError> {
            Ok(())
        }
        async fn put_events(
            &self,
            _g: &str,
            _s: &str,
            events: &[Event],
        ) -> Result<(), ServiceError> {
            tokio::time::sleep(self.delay).await;
            self.kept
                .lock()
                .unwrap()
                .extend(events.iter().map(|e| e.message.clone()));
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_burst_is_shipped_whole_in_order_however_slow_the_service() {
        let api = Slow {
            delay: Duration::from_millis(20),
            kept: Arc::default(),
        };
        let dir = tempfile::tempdir().unwrap();
        let shipper = Shipper::start(api.clone(), "g".into(), "s".into(), dir.path().join("o"));
        let sink = shipper.sink();
        // Far more than any in-memory queue held: the spool takes it all at once.
        for i in 0..200_000 {
            sink.line(&format!("line {i}"));
        }
        sink.line("two\nlines");
        drop(sink);
        let stats = shipper.finish(Duration::from_secs(60)).await;
        assert_eq!(
            (stats.sent, stats.dropped, stats.failed),
            (200_002, 0, 0),
            "{stats:?}"
        );
        let kept = api.kept.lock().unwrap().clone();
        assert_eq!(kept.len(), 200_002);
        assert!(kept[..200_000]
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line {i}")));
        assert_eq!(kept[200_000..], ["two", "lines"]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn what_is_unshipped_when_time_runs_out_is_dropped_with_the_reason() {
        let api = Slow {
            delay: Duration::from_millis(400),
            kept: Arc::default(),
        };
        let dir = tempfile::tempdir().unwrap();
        let shipper = Shipper::start(api.clone(), "g".into(), "s".into(), dir.path().join("o"));
        let sink = shipper.sink();
        for i in 0..50_000 {
            sink.line(&format!("line {i}"));
        }
        drop(sink);
        let stats = shipper.finish(Duration::from_secs(1)).await;
        assert!(stats.sent > 0 && stats.dropped > 0, "{stats:?}");
        assert_eq!(
            stats.sent + stats.dropped + stats.failed,
            50_000,
            "{stats:?}"
        );
        assert_eq!(
            stats.dropped_reason.as_deref(),
            Some("shipping had not caught up 1 s after the job ended")
        );
        // The spool still has every line, and the archive has them without their timestamps.
        let spooled = std::fs::read_to_string(dir.path().join("o")).unwrap();
        assert_eq!(spooled.lines().count(), 50_000);
        archive(&dir.path().join("o"), &dir.path().join("o.gz"))
            .await
            .unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(
                std::fs::File::open(dir.path().join("o.gz")).unwrap(),
            ),
            &mut text,
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 50_000);
        assert_eq!((lines[0], lines[49_999]), ("line 0", "line 49999"));
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
