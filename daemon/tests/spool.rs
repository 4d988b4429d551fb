//! A report whose upload fails is kept in the spool, uploaded on the next loop turn, and only
//! then is the message deleted. S3 cannot be made to fail on cue in moto, so the real S3 store
//! is wrapped in one that refuses the first report uploads; everything else is real.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use janitor_model::report::InstanceInfo;
use janitor_services::aws::{Precondition, ReportStore, S3Store, SqsQueue, Stored};
use janitor_services::engine::DockerEngine;
use janitor_services::error::{ErrorKind, ServiceError};
use janitor_services::fleet::Membership;
use janitor_services::gpu::Probe;
use janitor_services::imds::Imds;
use janitor_services::logs::CloudWatchLogs;
use janitor_services::metrics::NoMetrics;
use janitor_services::registry::Anonymous;
use janitor_testkit::{dockerfile, ensure_base_image, git_repo, spec, Fixture};
use janitord::settings::Settings;
use janitord::status::Status;
use janitord::{Daemon, Parts, Services};
use tokio_util::sync::CancellationToken;

/// The real services, with the refusing store.
struct Refusing;

impl Services for Refusing {
    type Queue = SqsQueue;
    type Store = RefusingStore;
    type Engine = DockerEngine;
    type Logs = CloudWatchLogs;
    type Fleet = Membership;
    type Registry = Anonymous;
    type Metadata = Imds;
    type Metrics = NoMetrics;
    type Secrets = janitor_services::secrets::AwsSecrets;
}

#[derive(Clone)]
struct RefusingStore {
    inner: S3Store,
    refusals_left: Arc<AtomicU32>,
}

impl RefusingStore {
    /// `Err` while refusals are left and the key is a report.
    fn refuse(&self, key: &str) -> Result<(), ServiceError> {
        let refused = key.ends_with("/report.json")
            && self
                .refusals_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if refused {
            return Err(ServiceError::new(
                "S3",
                "PutObject",
                key,
                ErrorKind::Unavailable,
                "HTTP 503 on cue",
            ));
        }
        Ok(())
    }
}

impl ReportStore for RefusingStore {
    async fn put_json(&self, key: &str, body: Vec<u8>) -> Result<(), ServiceError> {
        self.refuse(key)?;
        self.inner.put_json(key, body).await
    }

    async fn put_json_if(
        &self,
        key: &str,
        body: Vec<u8>,
        when: Precondition,
    ) -> Result<(), ServiceError> {
        self.refuse(key)?;
        self.inner.put_json_if(key, body, when).await
    }

    async fn get_json(&self, key: &str) -> Result<Option<Stored>, ServiceError> {
        self.inner.get_json(key).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_upload_is_spooled_and_retried_before_the_message_goes() {
    ensure_base_image();
    let fx = Fixture::start(&[]).await;
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "spool-repo",
        &[("Dockerfile", &dockerfile("echo spooled"))],
    );
    let run_id = "20261122T000000Z-spool1";
    let job_id = fx
        .send_job(run_id, &spec("spool-repo", &url, Duration::from_secs(60)))
        .await;
    let cache = tempfile::tempdir().unwrap();
    let refusals = Arc::new(AtomicU32::new(
        janitor_services::aws::REPORT_UPLOAD_ATTEMPTS,
    ));
    let daemon: Daemon<Refusing> = Daemon::new(Parts {
        settings: Settings {
            queue_url: fx.queue_url.clone(),
            bucket: fx.bucket.clone(),
            log_group: fx.log_group.clone(),
            cache_dir: cache.path().to_path_buf(),
            secrets_dir: cache.path().join("secrets"),
            github_api_url: "http://127.0.0.1:9".into(),
            github_git_url: "https://github.com".into(),
            status_target_url: None,
            agent_limits: Default::default(),
            agent_bedrock: None,
            prefetch_images: Vec::new(),
            git_author_name: "janitor".into(),
            git_author_email: "janitor@localhost".into(),
            poll_wait: Duration::from_secs(1),
            visibility_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(2),
            reject_retry: Duration::ZERO,
            error_retry: Duration::ZERO,
            interrupt_grace: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(120),
            imds_interval: Duration::from_secs(5),
            lifecycle_heartbeat: Duration::from_secs(60),
            heartbeat_file: cache.path().join("heartbeat"),
            require_cache_volume: false,
            cache_high_watermark: 0.8,
            cache_low_watermark: 0.6,
            cache_budget_bytes: Some(1 << 40),
            pinned_images: vec![],
            image_max_age: Duration::from_secs(72 * 3600),
            temp_max_age: Duration::from_secs(24 * 3600),
            journald_days: 0,
            cleanup_interval: Duration::from_secs(3600),
            docker_prune: false,
            min_free_bytes: 0,
            min_free_inodes: 0,
            expect_gpus: false,
            metrics_addr: None,
            allow_local_repos: true,
            exit_when_idle: true,
            instance_id: Some("i-0spool0000000001".into()),
            log_format: None,
            test_kill_after_crash_record: false,
        },
        queue: SqsQueue {
            client: fx.sqs(),
            url: fx.queue_url.clone(),
        },
        store: RefusingStore {
            inner: S3Store {
                client: fx.s3(),
                bucket: fx.bucket.clone(),
            },
            refusals_left: refusals.clone(),
        },
        logs: CloudWatchLogs { client: fx.logs() },
        engine: DockerEngine::connect().await.unwrap(),
        registry: Anonymous,
        secrets: janitor_services::secrets::AwsSecrets::new(&fx.sdk),
        metrics: NoMetrics,
        instance: InstanceInfo {
            id: "i-0spool0000000001".into(),
            instance_type: "g5.xlarge".into(),
            availability_zone: "us-east-1a".into(),
            lifecycle: "on-demand".into(),
        },
        fleet: None,
        metadata: None,
        gpu: Arc::new(Probe::none("test")),
        status: Arc::new(std::sync::Mutex::new(Status::new(
            "i-0spool0000000001",
            cache.path(),
            false,
            Probe::none("test").inventory(),
        ))),
        shutdown: CancellationToken::new(),
    });
    tokio::time::timeout(Duration::from_secs(120), daemon.run())
        .await
        .expect("the daemon should finish the queue");
    assert_eq!(
        refusals.load(Ordering::SeqCst),
        0,
        "every refusal was used: the first upload did fail"
    );
    let report = fx
        .json(&format!(
            "janitor-reports/runs/{run_id}/jobs/{job_id}/report.json"
        ))
        .await;
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["attempt"], 1, "the job was not run twice");
    assert_eq!(
        fx.depth(&fx.queue_url).await,
        (0, 0),
        "the message went once the report was stored"
    );
    assert_eq!(
        std::fs::read_dir(cache.path().join("spool"))
            .unwrap()
            .count(),
        0,
        "the spool is empty again"
    );
}

fn report(attempt: u32, status: janitor_model::report::JobStatus) -> janitor_model::report::Report {
    use janitor_model::config::RepoRef;
    use janitor_model::report::{JobIdentity, Report};
    Report::without_steps(
        JobIdentity {
            job_id: "cond-job-1".into(),
            run_id: "20261201T000000Z-cond01".into(),
            repo: RepoRef {
                organization: "local".into(),
                name: "cond".into(),
                url: None,
                git_ref: None,
            },
            prompt: "p".into(),
            gpu_required: false,
            enqueued_at: time::OffsetDateTime::now_utc(),
            attempt,
        },
        InstanceInfo {
            id: "i-0cond000000000001".into(),
            instance_type: "g5.xlarge".into(),
            availability_zone: "us-east-1a".into(),
            lifecycle: "on-demand".into(),
        },
        status,
        format!("attempt {attempt}"),
        "0",
    )
}

/// S3's conditional writes (moto enforces them as AWS does): an older attempt's report, say
/// one left in a spool and uploaded late, never replaces a newer attempt's report or history
/// entry; a newer one replaces an older one; the history keeps one entry per job.
#[tokio::test(flavor = "multi_thread")]
async fn a_report_never_replaces_a_newer_attempts() {
    use janitor_model::report::JobStatus;
    use janitord::settler::{Settled, Settler};
    let fx = Fixture::start(&[]).await;
    let spool = tempfile::tempdir().unwrap();
    let settler = Settler {
        queue: SqsQueue {
            client: fx.sqs(),
            url: fx.queue_url.clone(),
        },
        store: S3Store {
            client: fx.s3(),
            bucket: fx.bucket.clone(),
        },
        spool_dir: spool.path().to_path_buf(),
        visibility: Duration::from_secs(30),
        error_retry: Duration::from_secs(60),
        unsettled: Arc::default(),
    };
    let key = "janitor-reports/runs/20261201T000000Z-cond01/jobs/cond-job-1/report.json";
    let history = "janitor-reports/repos/local/cond/";
    let settle = |attempt, status| {
        let settler = settler.clone();
        async move {
            settler
                .settle(
                    "no-such-receipt",
                    report(attempt, status),
                    CancellationToken::new(),
                )
                .await
        }
    };
    // Stored, though the (made-up) receipt cannot be settled.
    assert_eq!(settle(2, JobStatus::Succeeded).await, Settled::StoredOnly);
    assert_eq!(fx.json(key).await["attempt"], 2);
    settle(1, JobStatus::Interrupted).await;
    assert_eq!(
        fx.json(key).await["attempt"],
        2,
        "the older attempt did not win"
    );
    assert_eq!(fx.json(key).await["status"], "succeeded");
    let entries = fx.keys(history).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(fx.json(&entries[0]).await["attempt"], 2);
    settle(3, JobStatus::Failed).await;
    assert_eq!(fx.json(key).await["attempt"], 3, "a newer attempt replaces");
    assert_eq!(fx.json(&fx.keys(history).await[0]).await["attempt"], 3);
    assert_eq!(fx.keys(history).await.len(), 1);
}
