//! The job queue (SQS) and the report store (S3): the narrow traits the daemon uses, their AWS
//! implementations, bounded upload retries, and the shared SDK configuration.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

use crate::backoff::Backoff;
use crate::error::{ErrorKind, ServiceError};

/// Attempts for one report upload before the daemon falls back on its local spool.
pub const REPORT_UPLOAD_ATTEMPTS: u32 = 5;
/// First delay between SQS/S3 retries.
pub const AWS_RETRY_BASE: Duration = Duration::from_millis(250);
/// Longest delay between SQS/S3 retries.
pub const AWS_RETRY_CAP: Duration = Duration::from_secs(8);

/// Shared SDK configuration: the standard chain (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// S3 client; path-style addressing when an endpoint override (moto, MinIO) is in use.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let builder =
        aws_sdk_s3::config::Builder::from(config).force_path_style(config.endpoint_url().is_some());
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// SQS client for long polls. Stalled-stream protection is off: it wakes the runtime every
/// 100 ms while a request is open, and a long poll is open for up to 20 s by design (that was
/// most of an idle daemon's CPU). Every call still has the SDK's retries.
pub fn sqs_client(config: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    let builder = aws_sdk_sqs::config::Builder::from(config)
        .stalled_stream_protection(aws_sdk_sqs::config::StalledStreamProtectionConfig::disabled());
    aws_sdk_sqs::Client::from_conf(builder.build())
}

/// A message taken from the queue.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// SQS's `ApproximateReceiveCount`: the attempt number.
    pub receive_count: u32,
}

/// Visible and in-flight message counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    pub visible: u64,
    pub in_flight: u64,
}

/// The job queue, as narrow as the daemon uses it.
pub trait JobQueue: Send + Sync {
    fn receive(
        &self,
        wait: Duration,
        visibility: Duration,
    ) -> impl Future<Output = Result<Option<Received>, ServiceError>> + Send;
    fn delete(&self, receipt: &str) -> impl Future<Output = Result<(), ServiceError>> + Send;
    fn set_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
    fn depth(&self) -> impl Future<Output = Result<Depth, ServiceError>> + Send;
}

/// When a conditional write may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Only if nothing is stored under the key (`If-None-Match: *`).
    Absent,
    /// Only if the stored object is still the one read (`If-Match: <etag>`).
    Matches(String),
}

/// A stored document and its ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub body: Vec<u8>,
    pub etag: String,
}

/// Where reports and ledger records go.
pub trait ReportStore: Send + Sync {
    fn put_json(
        &self,
        key: &str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// A write that happens only if `when` holds; a `Conflict` error when it does not.
    fn put_json_if(
        &self,
        key: &str,
        body: Vec<u8>,
        when: Precondition,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Stores a file under `key` (the job's output archive). The default reads it whole and
    /// stores it as [`ReportStore::put_json`] does; S3 streams it from disk.
    fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        content_type: &'static str,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send {
        let _ = content_type;
        async move {
            let body = tokio::fs::read(path).await.map_err(|e| {
                ServiceError::new(
                    "S3",
                    "PutObject",
                    key,
                    ErrorKind::Rejected,
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            self.put_json(key, body).await
        }
    }
    /// The document under `key`, `None` when there is none.
    fn get_json(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Stored>, ServiceError>> + Send;
}

/// SQS-backed [`JobQueue`].
#[derive(Clone)]
pub struct SqsQueue {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
}

fn secs_i32(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

impl JobQueue for SqsQueue {
    async fn receive(
        &self,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Option<Received>, ServiceError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(1)
            .wait_time_seconds(secs_i32(wait))
            .visibility_timeout(secs_i32(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| ServiceError::aws("SQS", "ReceiveMessage", &self.url, e))?;
        let Some(m) = out.messages.unwrap_or_default().into_iter().next() else {
            return Ok(None);
        };
        let receive_count = m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        Ok(Some(Received {
            message_id: m.message_id.unwrap_or_default(),
            receipt_handle: m.receipt_handle.unwrap_or_default(),
            body: m.body.unwrap_or_default(),
            receive_count,
        }))
    }

    async fn delete(&self, receipt: &str) -> Result<(), ServiceError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| ServiceError::aws("SQS", "DeleteMessage", &self.url, e))
    }

    async fn set_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), ServiceError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs_i32(visibility))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| ServiceError::aws("SQS", "ChangeMessageVisibility", &self.url, e))
    }

    async fn depth(&self) -> Result<Depth, ServiceError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| ServiceError::aws("SQS", "GetQueueAttributes", &self.url, e))?;
        let get = |name: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Depth {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}

/// S3-backed [`ReportStore`].
#[derive(Clone)]
pub struct S3Store {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
}

impl ReportStore for S3Store {
    async fn put_json(&self, key: &str, body: Vec<u8>) -> Result<(), ServiceError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(body.into())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                ServiceError::aws("S3", "PutObject", format!("s3://{}/{key}", self.bucket), e)
            })
    }

    async fn put_json_if(
        &self,
        key: &str,
        body: Vec<u8>,
        when: Precondition,
    ) -> Result<(), ServiceError> {
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(body.into());
        let put = match when {
            Precondition::Absent => put.if_none_match("*"),
            Precondition::Matches(etag) => put.if_match(etag),
        };
        put.send().await.map(|_| ()).map_err(|e| {
            ServiceError::aws("S3", "PutObject", format!("s3://{}/{key}", self.bucket), e)
        })
    }

    async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        content_type: &'static str,
    ) -> Result<(), ServiceError> {
        let target = format!("s3://{}/{key}", self.bucket);
        let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
            .await
            .map_err(|e| {
                ServiceError::new(
                    "S3",
                    "PutObject",
                    &target,
                    ErrorKind::Rejected,
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| ServiceError::aws("S3", "PutObject", target, e))
    }

    async fn get_json(&self, key: &str) -> Result<Option<Stored>, ServiceError> {
        let target = format!("s3://{}/{key}", self.bucket);
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(ServiceError::aws("S3", "GetObject", target, e)),
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let body = out.body.collect().await.map_err(|e| {
            ServiceError::new(
                "S3",
                "GetObject",
                &target,
                crate::error::ErrorKind::Unavailable,
                e.to_string(),
            )
        })?;
        Ok(Some(Stored {
            body: body.into_bytes().to_vec(),
            etag,
        }))
    }
}

/// Calls `f` until it succeeds or fails with what a retry cannot help, at most
/// [`REPORT_UPLOAD_ATTEMPTS`] times, with backoff.
pub async fn with_retries<T, F, Fut>(what: &str, mut f: F) -> Result<T, ServiceError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ServiceError>>,
{
    let mut backoff = Backoff::new(AWS_RETRY_BASE, AWS_RETRY_CAP);
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if !e.retryable() || attempt >= REPORT_UPLOAD_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(what, attempt, error = %e, "store call failed; retrying");
                attempt += 1;
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Puts a JSON document, retrying what a retry can help (throttling, outages) with backoff,
/// at most [`REPORT_UPLOAD_ATTEMPTS`] times; a refusal is returned at once.
pub async fn put_with_retries<S: ReportStore>(
    store: &S,
    key: &str,
    body: &[u8],
) -> Result<(), ServiceError> {
    with_retries(key, || store.put_json(key, body.to_vec())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails every put with `kind`, counting the calls.
    struct Failing {
        kind: ErrorKind,
        calls: AtomicU32,
    }

    impl ReportStore for Failing {
        async fn put_json(&self, key: &str, _body: Vec<u8>) -> Result<(), ServiceError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Err(ServiceError::new(
                "S3",
                "PutObject",
                key,
                self.kind,
                "on cue",
            ))
        }
        async fn put_json_if(
            &self,
            key: &str,
            body: Vec<u8>,
            _when: Precondition,
        ) -> Result<(), ServiceError> {
            self.put_json(key, body).await
        }
        async fn get_json(&self, _key: &str) -> Result<Option<Stored>, ServiceError> {
            Ok(None)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_what_a_retry_can_help() {
        for (kind, calls) in [
            (ErrorKind::Throttled, REPORT_UPLOAD_ATTEMPTS),
            (ErrorKind::Unavailable, REPORT_UPLOAD_ATTEMPTS),
            (ErrorKind::Rejected, 1),
            (ErrorKind::NotFound, 1),
        ] {
            let store = Failing {
                kind,
                calls: AtomicU32::new(0),
            };
            let e = put_with_retries(&store, "k", b"{}").await.unwrap_err();
            assert_eq!(e.kind, kind);
            assert_eq!(store.calls.load(Ordering::SeqCst), calls, "{kind}");
        }
    }
}
