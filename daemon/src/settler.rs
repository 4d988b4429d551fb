//! The settler: the one owner of a finished job's result, from the container's end to the
//! message's delete. The report is written to the local spool (fsynced, renamed) before the
//! first upload; the report and its history entry are stored; only then is the message deleted
//! (or, for an interrupted job, made visible again; for an `error`, after the retry pause). A failed upload leaves the spooled copy,
//! which is uploaded before the next job is taken: no job is taken while a report is
//! unsettled, and the unsettled report's message keeps its visibility all that time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use janitor_model::ledger;
use janitor_model::report::{JobStatus, Report};
use janitor_services::aws::{self, JobQueue, Precondition, ReportStore};
use janitor_services::error::{ErrorKind, ServiceError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// A report waiting in the spool for its upload, with what is needed to settle the message.
#[derive(Debug, Serialize, Deserialize)]
pub struct Spooled {
    pub receipt_handle: String,
    pub report: Report,
}

/// Moves finished jobs' results to the store and settles their messages.
#[derive(Clone)]
pub struct Settler<Q, S> {
    pub queue: Q,
    pub store: S,
    pub spool_dir: PathBuf,
    /// The visibility the keep-alive renews.
    pub visibility: Duration,
    /// How long a job that ended `error` stays hidden before it is offered again.
    pub error_retry: Duration,
    /// Keep-alives of the messages whose reports wait in the spool, by receipt handle.
    pub unsettled: Arc<Mutex<HashMap<String, CancellationToken>>>,
}

/// Rounds of read-and-replace before a report write gives up on a key that keeps changing.
pub const CONDITIONAL_ROUNDS: u32 = 3;

/// How a conditional report write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Stored,
    /// A newer attempt's report is there; it stays.
    Superseded {
        stored_attempt: u64,
    },
}

/// How a settle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Stored and the message settled (deleted or handed back).
    Done,
    /// Stored, but the message could not be settled: the job may run again.
    StoredOnly,
    /// Not stored: the report waits in the spool.
    Spooled,
}

impl<Q: JobQueue + Clone + 'static, S: ReportStore + Clone + 'static> Settler<Q, S> {
    /// Renews the message's visibility every third of the timeout until cancelled.
    pub fn keep_visible(&self, receipt: String) -> CancellationToken {
        let token = CancellationToken::new();
        let queue = self.queue.clone();
        let visibility = self.visibility;
        let stop = token.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(visibility / 3);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = queue.set_visibility(&receipt, visibility).await {
                            tracing::warn!(error = %e, retryable = e.retryable(), "could not extend the message's visibility; another instance may take the job");
                        }
                    }
                }
            }
        });
        token
    }

    /// Spools the report, uploads it, then settles the message. `keepalive` renews the
    /// message's visibility: it is stopped once the report is stored, and kept running while
    /// the report waits in the spool.
    pub async fn settle(
        &self,
        receipt: &str,
        report: Report,
        keepalive: CancellationToken,
    ) -> Settled {
        let spooled = Spooled {
            receipt_handle: receipt.to_string(),
            report,
        };
        let path = self.spool_dir.join(format!(
            "{}-{}.json",
            spooled.report.job_id, spooled.report.attempt
        ));
        if let Err(e) = write_spool(&path, &spooled) {
            tracing::error!(path = %path.display(), error = %e, "could not spool the report; uploading without a local copy");
        }
        let settled = self.upload(&spooled).await;
        if settled == Settled::Spooled {
            self.lock().insert(receipt.to_string(), keepalive);
        } else {
            keepalive.cancel();
            let _ = std::fs::remove_file(&path);
        }
        settled
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.unsettled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops the keep-alive of a message whose report is now stored.
    fn settled(&self, receipt: &str) {
        if let Some(k) = self.lock().remove(receipt) {
            k.cancel();
        }
    }

    async fn upload(&self, spooled: &Spooled) -> Settled {
        let report = &spooled.report;
        let body = match serde_json::to_vec_pretty(report) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "report could not be serialised");
                return Settled::Spooled;
            }
        };
        let keys = [
            ledger::report_key(&report.run_id, &report.job_id),
            ledger::repo_history_key(
                &report.repo.organization,
                &report.repo.name,
                &report.run_id,
                &report.job_id,
            ),
        ];
        for key in &keys {
            match self.put_report(key, &body, report.attempt).await {
                Ok(Written::Stored) => {}
                Ok(Written::Superseded { stored_attempt }) => {
                    tracing::warn!(
                        key,
                        attempt = report.attempt,
                        stored_attempt,
                        "a newer attempt's report is stored; this older one is not written over it"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, retryable = e.retryable(), "report upload failed; it stays in the spool and the message stays on the queue");
                    return Settled::Spooled;
                }
            }
        }
        // An interrupted job goes back at once; one that ended `error` (not the repository's
        // fault) after a pause, until the queue's maxReceiveCount moves it to the DLQ.
        let hand_back = match report.status {
            JobStatus::Interrupted => Some(Duration::ZERO),
            JobStatus::Error => Some(self.error_retry),
            _ => None,
        };
        let settled = if let Some(after) = hand_back {
            self.queue
                .set_visibility(&spooled.receipt_handle, after)
                .await
        } else {
            self.queue.delete(&spooled.receipt_handle).await
        };
        match settled {
            Ok(()) => Settled::Done,
            Err(e) => {
                // The report is stored; a later attempt of the same job overwrites it.
                tracing::warn!(error = %e, "report stored but the message could not be settled; the job may run again");
                Settled::StoredOnly
            }
        }
    }

    /// Writes a report without a race: created if absent (`If-None-Match: *`), else replaced
    /// only if the stored one is from the same or an older attempt, and only if it is still the
    /// one read (`If-Match`). A newer attempt's report is never replaced.
    pub async fn put_report(
        &self,
        key: &str,
        body: &[u8],
        attempt: u32,
    ) -> Result<Written, ServiceError> {
        for _ in 0..CONDITIONAL_ROUNDS {
            let created = aws::with_retries(key, || {
                self.store
                    .put_json_if(key, body.to_vec(), Precondition::Absent)
            })
            .await;
            match created {
                Ok(()) => return Ok(Written::Stored),
                Err(e) if e.kind == ErrorKind::Conflict => {}
                Err(e) => return Err(e),
            }
            let Some(existing) = aws::with_retries(key, || self.store.get_json(key)).await? else {
                continue;
            };
            let stored_attempt = serde_json::from_slice::<serde_json::Value>(&existing.body)
                .ok()
                .and_then(|v| v.get("attempt").and_then(serde_json::Value::as_u64))
                .unwrap_or(0);
            if stored_attempt > u64::from(attempt) {
                return Ok(Written::Superseded { stored_attempt });
            }
            let replaced = aws::with_retries(key, || {
                self.store.put_json_if(
                    key,
                    body.to_vec(),
                    Precondition::Matches(existing.etag.clone()),
                )
            })
            .await;
            match replaced {
                Ok(()) => return Ok(Written::Stored),
                Err(e) if e.kind == ErrorKind::Conflict => {}
                Err(e) => return Err(e),
            }
        }
        Err(ServiceError::new(
            "S3",
            "PutObject",
            key,
            ErrorKind::Conflict,
            format!("the stored report changed {CONDITIONAL_ROUNDS} times while it was replaced"),
        ))
    }

    /// Uploads reports left in the spool by a failed upload or a crash. Returns how many are
    /// still unsettled (0: a job may be taken).
    pub async fn drain_spool(&self) -> usize {
        let mut left = 0;
        let Ok(entries) = std::fs::read_dir(&self.spool_dir) else {
            return 0;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path).map(|b| serde_json::from_slice::<Spooled>(&b)) {
                Ok(Ok(spooled)) => {
                    tracing::info!(path = %path.display(), job_id = %spooled.report.job_id, "uploading a spooled report");
                    if self.upload(&spooled).await == Settled::Spooled {
                        left += 1;
                    } else {
                        self.settled(&spooled.receipt_handle);
                        let _ = std::fs::remove_file(&path);
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(path = %path.display(), error = %e, "spooled report is unreadable; moving it aside");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                }
                Err(e) => {
                    left += 1;
                    tracing::warn!(path = %path.display(), error = %e, "cannot read spooled report")
                }
            }
        }
        left
    }
}

/// Writes, fsyncs and renames, so a spooled report is whole or absent.
pub fn write_spool(path: &Path, spooled: &Spooled) -> std::io::Result<()> {
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
