//! The AWS side: the job queue (SQS), the report store (S3), instance identity (IMDSv2) and
//! client construction. Only this module (and ctl's) talks to AWS.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use janitor_model::report::InstanceInfo;

use crate::backoff::Backoff;

/// Attempts for one report upload before the daemon falls back on its local spool.
pub const REPORT_UPLOAD_ATTEMPTS: u32 = 5;
/// First delay between SQS/S3 retries.
pub const AWS_RETRY_BASE: Duration = Duration::from_millis(250);
/// Longest delay between SQS/S3 retries.
pub const AWS_RETRY_CAP: Duration = Duration::from_secs(8);

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("SQS {action} on {queue} failed: {message}")]
    Sqs {
        action: &'static str,
        queue: String,
        message: String,
    },
    #[error("S3 {action} of s3://{bucket}/{key} failed: {message}")]
    S3 {
        action: &'static str,
        bucket: String,
        key: String,
        message: String,
    },
    #[error("ECR login for {registry} failed: {message}")]
    Ecr { registry: String, message: String },
    #[error("instance metadata (IMDSv2) {path} could not be read: {message}; set AWS_EC2_METADATA_SERVICE_ENDPOINT or JANITOR_INSTANCE_ID off EC2")]
    Imds { path: String, message: String },
}

/// The SDK's error with its whole cause chain, as one line.
pub fn describe<E: std::error::Error>(e: E) -> String {
    aws_sdk_s3::error::DisplayErrorContext(e).to_string()
}

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

/// A message taken from the queue.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// SQS's `ApproximateReceiveCount`: the attempt number.
    pub receive_count: u32,
}

/// The job queue, as narrow as the daemon uses it.
pub trait JobQueue: Send + Sync {
    fn receive(
        &self,
        wait: Duration,
        visibility: Duration,
    ) -> impl Future<Output = Result<Option<Received>, AwsError>> + Send;
    fn delete(&self, receipt: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn set_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Visible and in-flight message counts.
    fn depth(&self) -> impl Future<Output = Result<(u64, u64), AwsError>> + Send;
}

/// Where reports and ledger records go.
pub trait ReportStore: Send + Sync {
    fn put_json(
        &self,
        key: &str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// SQS-backed [`JobQueue`].
#[derive(Clone)]
pub struct SqsQueue {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
}

impl SqsQueue {
    fn err(&self, action: &'static str, e: impl std::error::Error) -> AwsError {
        AwsError::Sqs {
            action,
            queue: self.url.clone(),
            message: describe(e),
        }
    }
}

fn secs_i32(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

impl JobQueue for SqsQueue {
    async fn receive(
        &self,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Option<Received>, AwsError> {
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
            .map_err(|e| self.err("ReceiveMessage", e))?;
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

    async fn delete(&self, receipt: &str) -> Result<(), AwsError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("DeleteMessage", e))
    }

    async fn set_visibility(&self, receipt: &str, visibility: Duration) -> Result<(), AwsError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs_i32(visibility))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("ChangeMessageVisibility", e))
    }

    async fn depth(&self) -> Result<(u64, u64), AwsError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| self.err("GetQueueAttributes", e))?;
        let get = |name: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        ))
    }
}

/// S3-backed [`ReportStore`].
#[derive(Clone)]
pub struct S3Store {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
}

impl ReportStore for S3Store {
    async fn put_json(&self, key: &str, body: Vec<u8>) -> Result<(), AwsError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(body.into())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::S3 {
                action: "PutObject",
                bucket: self.bucket.clone(),
                key: key.to_string(),
                message: describe(e),
            })
    }
}

/// Puts a JSON document with bounded retries.
pub async fn put_with_retries<S: ReportStore>(
    store: &S,
    key: &str,
    body: &[u8],
) -> Result<(), AwsError> {
    let mut backoff = Backoff::new(AWS_RETRY_BASE, AWS_RETRY_CAP);
    let mut attempt = 1;
    loop {
        match store.put_json(key, body.to_vec()).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= REPORT_UPLOAD_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(key, attempt, error = %e, "upload failed; retrying");
                attempt += 1;
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// An ECR registry named by an image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrRegistry {
    pub account: String,
    pub region: String,
    pub host: String,
}

/// `{account}.dkr.ecr.{region}.amazonaws.com[.cn]/…` → the registry; other images → `None`.
pub fn ecr_registry(image: &str) -> Option<EcrRegistry> {
    let host = image.split('/').next()?;
    if !image.contains('/') {
        return None;
    }
    let mut parts = host.split('.');
    let account = parts.next()?;
    let (dkr, ecr, region) = (parts.next()?, parts.next()?, parts.next()?);
    let rest: Vec<&str> = parts.collect();
    let suffix_ok = rest == ["amazonaws", "com"] || rest == ["amazonaws", "com", "cn"];
    let ok = account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && dkr == "dkr"
        && ecr == "ecr"
        && suffix_ok
        && !region.is_empty();
    ok.then(|| EcrRegistry {
        account: account.to_string(),
        region: region.to_string(),
        host: host.to_string(),
    })
}

/// A registry login from ECR's `GetAuthorizationToken` (a base64 `AWS:password`).
pub async fn ecr_credentials(
    config: &aws_config::SdkConfig,
    registry: &EcrRegistry,
) -> Result<crate::docker::RegistryCredentials, AwsError> {
    let err = |message: String| AwsError::Ecr {
        registry: registry.host.clone(),
        message,
    };
    let conf = aws_sdk_ecr::config::Builder::from(config)
        .region(aws_config::Region::new(registry.region.clone()))
        .build();
    let out = aws_sdk_ecr::Client::from_conf(conf)
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| err(describe(e)))?;
    let token = out
        .authorization_data()
        .first()
        .and_then(|d| d.authorization_token())
        .ok_or_else(|| err("no authorization data in the answer".to_string()))?;
    let decoded = aws_smithy_types::base64::decode(token)
        .map_err(|e| err(format!("token is not base64: {e}")))?;
    let text = String::from_utf8(decoded).map_err(|_| err("token is not text".to_string()))?;
    let (username, password) = text
        .split_once(':')
        .ok_or_else(|| err("token is not user:password".to_string()))?;
    Ok(crate::docker::RegistryCredentials {
        username: username.to_string(),
        password: password.to_string(),
        server: format!("https://{}", registry.host),
    })
}

/// Reads the instance's identity from IMDSv2.
pub async fn instance_identity() -> Result<InstanceInfo, AwsError> {
    let client = aws_config::imds::Client::builder()
        .max_attempts(3)
        .connect_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(2))
        .build();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            client
                .get(format!("/latest/meta-data/{path}"))
                .await
                .map(|v| v.as_ref().trim().to_string())
                .map_err(|e| AwsError::Imds {
                    path: path.to_string(),
                    message: describe(e),
                })
        }
    };
    let id = get("instance-id").await?;
    let instance_type = get("instance-type").await?;
    let availability_zone = get("placement/availability-zone").await?;
    // Absent on some instance kinds; on-demand is what it means then.
    let lifecycle = get("instance-life-cycle")
        .await
        .unwrap_or_else(|_| "on-demand".to_string());
    Ok(InstanceInfo {
        id,
        instance_type,
        availability_zone,
        lifecycle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_registries_are_recognised() {
        let r = ecr_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/janitor-agent:latest")
            .unwrap();
        assert_eq!(
            (r.account.as_str(), r.region.as_str()),
            ("123456789012", "us-east-1")
        );
        assert_eq!(r.host, "123456789012.dkr.ecr.us-east-1.amazonaws.com");
        assert!(ecr_registry("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/a").is_some());
        for other in [
            "janitor-agent:latest",
            "ghcr.io/org/agent:1",
            "12345.dkr.ecr.us-east-1.amazonaws.com/a",
            "123456789012.dkr.ecr.us-east-1.evil.com/a",
        ] {
            assert_eq!(ecr_registry(other), None, "{other}");
        }
    }
}
