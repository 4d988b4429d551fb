//! The run manifest to S3, then one message per repository to its pool's queue
//! (`SendMessageBatch`).

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use janitor_model::config::WorkersConfig;
use janitor_model::job::JobMessage;
use janitor_model::ledger::{self, ManifestJob, RunManifest};
use time::OffsetDateTime;

use crate::ledger::Ledger;
use crate::pools::{Plan, Pool};
use crate::CtlError;
use janitor_services::error::{ErrorKind, ServiceError};

/// SQS takes at most 10 messages per SendMessageBatch.
pub const SQS_BATCH: usize = 10;
/// Attempts for entries SQS reports as failed in a batch.
pub const SEND_ATTEMPTS: u32 = 3;

/// Who started a run: `$USER@host`.
pub fn whoami() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_string());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    format!("{user}@{host}")
}

/// Writes the manifest, then sends each placed job to its pool's queue. Returns the manifest.
pub async fn enqueue(
    cfg: &WorkersConfig,
    ledger: &Ledger,
    sqs: &aws_sdk_sqs::Client,
    pools: &[Pool],
    plan: &Plan,
    discovery: Option<janitor_model::ledger::Discovery>,
) -> Result<RunManifest, CtlError> {
    let now = OffsetDateTime::now_utc();
    let run_id = ledger::new_run_id(now);
    // (pool index, message, why that pool)
    let placed: Vec<(usize, JobMessage, String)> = plan
        .placed
        .iter()
        .filter_map(|p| {
            let spec = cfg.repositories.get(p.index)?;
            let mut m = JobMessage::new(
                ledger::new_job_id(&spec.repo.name),
                run_id.clone(),
                spec,
                now,
            );
            // A pool without a GPU runs the job without one (a hub.json `runsOn: CPU`, a
            // `pool: cpu`): the daemon must not fail it for the GPU it was never meant to have.
            if pools
                .get(p.pool)
                .is_some_and(|pool| pool.shape.gpu_memory_gb == Some(0))
            {
                m.gpu_required = false;
                m.gpu_must_be_used = Some(false);
            }
            Some((p.pool, m, p.why.clone()))
        })
        .collect();
    let instance_type = |pool: usize, m: &JobMessage| {
        m.instance_type
            .clone()
            .or_else(|| pools.get(pool).map(|p| p.shape.instance_type.clone()))
    };
    let pool_name = |pool: usize| pools.get(pool).map(|p| p.name().to_string());
    let manifest = RunManifest {
        schema: 1,
        run_id: run_id.clone(),
        config_path: cfg.path.display().to_string(),
        created_by: whoami(),
        created_at: now,
        max_concurrent_instances: cfg.max_concurrent_instances,
        jobs: placed
            .iter()
            .map(|(pool, m, why)| ManifestJob {
                job_id: m.job_id.clone(),
                repository: m.repo.full_name(),
                prompt: m.prompt.clone(),
                gpu_required: m.gpu_required,
                timeout_seconds: m.timeout,
                instance_type: instance_type(*pool, m),
                pool: pool_name(*pool),
                route: Some(why.clone()),
            })
            .collect(),
        estimated_cost_usd: Some(crate::pools::estimate(cfg, pools, plan).total_usd),
        discovery,
        not_run: plan.not_run.clone(),
        pool_instances: plan
            .counts()
            .keys()
            .filter_map(|i| {
                let p = pools.get(*i)?;
                let limit = cfg.max_instances_for(p.name());
                let cap = p.max_instances.map_or(limit, |m| m.min(limit));
                Some((p.name().to_string(), cap))
            })
            .collect(),
    };
    ledger
        .put(&ledger::manifest_key(&run_id), &manifest)
        .await?;
    for (i, pool) in pools.iter().enumerate() {
        let messages: Vec<JobMessage> = placed
            .iter()
            .filter(|(p, _, _)| *p == i)
            .map(|(_, m, _)| m.clone())
            .collect();
        for chunk in messages.chunks(SQS_BATCH) {
            send_batch(sqs, &pool.queue_url, chunk).await?;
        }
    }
    Ok(manifest)
}

async fn send_batch(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    chunk: &[JobMessage],
) -> Result<(), CtlError> {
    let mut pending: Vec<(String, String)> = Vec::new();
    for (i, m) in chunk.iter().enumerate() {
        let body = serde_json::to_string(m).map_err(|e| CtlError::Document {
            key: format!("job {}", m.job_id),
            reason: e.to_string(),
        })?;
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
            .map_err(|e| CtlError::Service {
                context: "enqueueing the run's jobs".to_string(),
                source: ServiceError::aws("SQS", "SendMessageBatch", queue_url, e),
            })?;
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
            return Err(CtlError::Service {
                context: format!(
                    "SQS refused {} message(s) after {SEND_ATTEMPTS} attempts",
                    failed.len()
                ),
                source: ServiceError::new(
                    "SQS",
                    "SendMessageBatch",
                    queue_url,
                    ErrorKind::Rejected,
                    why.join("; "),
                ),
            });
        }
        pending.retain(|(id, _)| failed.contains(id));
        tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt))).await;
    }
    Ok(())
}
