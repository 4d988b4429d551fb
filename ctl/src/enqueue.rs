//! `janitorctl enqueue`: the run manifest to S3, then one message per repository to SQS.

use std::path::PathBuf;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use janitor_model::config::{ParseOptions, WorkersConfig};
use janitor_model::job::JobMessage;
use janitor_model::ledger::{self, ManifestJob, RunManifest};
use time::OffsetDateTime;

use crate::EXIT_USAGE;

/// SQS takes at most 10 messages per SendMessageBatch.
pub const SQS_BATCH: usize = 10;
/// Attempts for entries SQS reports as failed in a batch.
pub const SEND_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, clap::Args)]
pub struct AwsFlags {
    /// SQS jobs queue URL
    #[arg(long, env = "JANITOR_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// S3 bucket of the `janitor-reports/` ledger
    #[arg(long, env = "JANITOR_BUCKET")]
    pub bucket: Option<String>,
}

impl AwsFlags {
    /// Both settings, or a line naming what to set.
    pub fn require(&self) -> Result<(String, String), String> {
        let queue = self
            .queue_url
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or("missing setting: pass --queue-url or set JANITOR_QUEUE_URL")?;
        let bucket = self
            .bucket
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or("missing setting: pass --bucket or set JANITOR_BUCKET")?;
        Ok((queue, bucket))
    }
}

pub async fn command(file: PathBuf, flags: AwsFlags, opts: ParseOptions) -> u8 {
    let Some(cfg) = crate::load_config(&file, &opts) else {
        return EXIT_USAGE;
    };
    let (queue_url, bucket) = match flags.require() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("janitorctl: {e}");
            return EXIT_USAGE;
        }
    };
    let sdk = janitord::aws::sdk_config().await;
    let s3 = janitord::aws::s3_client(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    match enqueue(&cfg, &s3, &bucket, &sqs, &queue_url).await {
        Ok(manifest) => {
            eprintln!(
                "enqueued {} job(s) for run {}",
                manifest.jobs.len(),
                manifest.run_id
            );
            println!("{}", manifest.run_id);
            0
        }
        Err(e) => {
            eprintln!("janitorctl: {e}");
            1
        }
    }
}

/// Who started a run: `$USER@host`.
fn whoami() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_string());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    format!("{user}@{host}")
}

/// Writes the manifest, then sends the messages. Returns the manifest.
pub async fn enqueue(
    cfg: &WorkersConfig,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<RunManifest, String> {
    let now = OffsetDateTime::now_utc();
    let run_id = ledger::new_run_id(now);
    let messages: Vec<JobMessage> = cfg
        .repositories
        .iter()
        .map(|spec| {
            JobMessage::new(
                ledger::new_job_id(&spec.repo.name),
                run_id.clone(),
                spec,
                now,
            )
        })
        .collect();
    let estimated: f64 = cfg
        .repositories
        .iter()
        .filter_map(|r| {
            janitor_model::pricing::cost_usd(
                r.instance_type.as_deref().unwrap_or("g5.xlarge"),
                r.timeout.as_secs_f64(),
            )
        })
        .sum();
    let manifest = RunManifest {
        schema: 1,
        run_id: run_id.clone(),
        config_path: cfg.path.display().to_string(),
        created_by: whoami(),
        created_at: now,
        max_concurrent_instances: cfg.max_concurrent_instances,
        jobs: messages
            .iter()
            .map(|m| ManifestJob {
                job_id: m.job_id.clone(),
                repository: m.repo.full_name(),
                prompt: m.prompt.clone(),
                gpu_required: m.gpu_required,
                timeout_seconds: m.timeout,
                instance_type: m.instance_type.clone(),
            })
            .collect(),
        estimated_cost_usd: Some((estimated * 1000.0).round() / 1000.0),
    };
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| format!("manifest: {e}"))?;
    let key = ledger::manifest_key(&run_id);
    s3.put_object()
        .bucket(bucket)
        .key(&key)
        .content_type("application/json")
        .body(body.into())
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot write s3://{bucket}/{key}: {}",
                janitord::aws::describe(e)
            )
        })?;
    for chunk in messages.chunks(SQS_BATCH) {
        send_batch(sqs, queue_url, chunk).await?;
    }
    Ok(manifest)
}

async fn send_batch(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    chunk: &[JobMessage],
) -> Result<(), String> {
    let mut pending: Vec<(String, String)> = Vec::new();
    for (i, m) in chunk.iter().enumerate() {
        let body = serde_json::to_string(m).map_err(|e| format!("job {}: {e}", m.job_id))?;
        pending.push((format!("m{i}"), body));
    }
    for attempt in 1..=SEND_ATTEMPTS {
        let entries: Vec<SendMessageBatchRequestEntry> = pending
            .iter()
            .filter_map(|(id, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(id)
                    .message_body(body)
                    .build()
                    .ok()
            })
            .collect();
        let out = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| format!("cannot send to {queue_url}: {}", janitord::aws::describe(e)))?;
        let failed: Vec<String> = out.failed().iter().map(|f| f.id().to_string()).collect();
        if failed.is_empty() {
            return Ok(());
        }
        let why: Vec<String> = out
            .failed()
            .iter()
            .map(|f| format!("{}: {}", f.code(), f.message().unwrap_or("")))
            .collect();
        if attempt == SEND_ATTEMPTS {
            return Err(format!(
                "SQS refused {} message(s) after {SEND_ATTEMPTS} attempts: {}",
                failed.len(),
                why.join("; ")
            ));
        }
        pending.retain(|(id, _)| failed.contains(id));
        tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt))).await;
    }
    Ok(())
}
