//! janitord's settings: flags, then `JANITOR_*` variables, then `/etc/janitor/janitord.toml`,
//! then defaults. Read and validated once at start, then passed down.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Read when it exists and `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/janitor/janitord.toml";
/// The log group users know (seed 000).
pub use janitor_model::ledger::DEFAULT_LOG_GROUP;
/// Where build secrets are read from unless configured.
pub const DEFAULT_SECRETS_DIR: &str = "/etc/janitor/secrets";
/// The persistent gp3 volume's mount point.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/janitor";

/// Output format of the daemon's own logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON lines (systemd, CloudWatch agent).
    Json,
    /// Human-readable.
    Text,
}

/// Flags; each also reads its `JANITOR_*` variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Flags {
    /// TOML settings file [default: /etc/janitor/janitord.toml when it exists]
    #[arg(long, env = "JANITOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// SQS jobs queue URL
    #[arg(long, env = "JANITOR_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// S3 bucket holding the `janitor-reports/` ledger
    #[arg(long, env = "JANITOR_BUCKET")]
    pub bucket: Option<String>,
    /// CloudWatch log group for job output [default: /janitor-runner]
    #[arg(long, env = "JANITOR_LOG_GROUP")]
    pub log_group: Option<String>,
    /// Cache volume mount: job workspaces and the report spool live here [default: /var/lib/janitor]
    #[arg(long, env = "JANITOR_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Build secrets, one file per id (`build_secrets: [HF_TOKEN]` reads `HF_TOKEN` here)
    /// [default: /etc/janitor/secrets]
    #[arg(long, env = "JANITOR_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// GitHub's REST API, where fixes become pull requests (the token is the secrets
    /// directory's GITHUB_TOKEN) [default: https://api.github.com]
    #[arg(long, env = "JANITOR_GITHUB_API_URL")]
    pub github_api_url: Option<String>,
    /// Where fixes are pushed: a fix for org/name goes to {this}/org/name, and the token is
    /// sent to no other URL [default: https://github.com]
    #[arg(long, env = "JANITOR_GITHUB_GIT_URL")]
    pub github_git_url: Option<String>,
    /// The commit status's link (`report_status: true`): a URL with `{run_id}` and `{job_id}`
    /// replaced (the run's page, a console link to the report) [default: none]
    #[arg(long, env = "JANITOR_STATUS_TARGET_URL")]
    pub status_target_url: Option<String>,
    /// The agent container's user, uid:gid (never root) [default: 10001:10001]
    #[arg(long, env = "JANITOR_AGENT_USER")]
    pub agent_user: Option<String>,
    /// The agent container's memory limit in MiB [default: 8192]
    #[arg(long, env = "JANITOR_AGENT_MEMORY_MIB")]
    pub agent_memory_mib: Option<u64>,
    /// The agent container's CPU limit, in CPUs [default: 2]
    #[arg(long, env = "JANITOR_AGENT_CPUS")]
    pub agent_cpus: Option<f64>,
    /// The agent container's process and thread limit [default: 4096]
    #[arg(long, env = "JANITOR_AGENT_PIDS")]
    pub agent_pids: Option<u64>,
    /// KEY=VALUE for every agent container (ANTHROPIC_BASE_URL, ANTHROPIC_MODEL,
    /// CLAUDE_CODE_USE_BEDROCK=1); repeat the flag. Not for secrets: those are the job's
    /// `secrets:`
    #[arg(long = "agent-env", env = "JANITOR_AGENT_ENV", value_delimiter = ',')]
    pub agent_env: Vec<String>,
    /// The agent a job gets when its config asks for one (`agent:`) without naming an image:
    /// janitor's own [default: none]
    #[arg(long, env = "JANITOR_DEFAULT_AGENT_IMAGE")]
    pub default_agent_image: Option<String>,
    /// Images pulled into the cache at start when absent (the agent's), with the registry's
    /// login; repeat the flag [default: none]
    #[arg(
        long = "prefetch-image",
        env = "JANITOR_PREFETCH_IMAGES",
        value_delimiter = ','
    )]
    pub prefetch_images: Vec<String>,
    /// The agent container's Docker network [default: bridge]
    #[arg(long, env = "JANITOR_AGENT_NETWORK")]
    pub agent_network: Option<String>,
    /// Amazon Bedrock for the agent: janitord assumes this role (one that may only invoke
    /// the configured models) for each job and gives the agent its short-lived credentials
    /// with CLAUDE_CODE_USE_BEDROCK=1 [default: off]
    #[arg(long, env = "JANITOR_AGENT_BEDROCK_ROLE_ARN")]
    pub agent_bedrock_role_arn: Option<String>,
    /// The region of Bedrock's endpoint [default: the instance's region]
    #[arg(long, env = "JANITOR_AGENT_BEDROCK_REGION")]
    pub agent_bedrock_region: Option<String>,
    /// Author of fix commits [default: janitor]
    #[arg(long, env = "JANITOR_GIT_AUTHOR_NAME")]
    pub git_author_name: Option<String>,
    /// Author e-mail of fix commits [default: janitor@users.noreply.github.com]
    #[arg(long, env = "JANITOR_GIT_AUTHOR_EMAIL")]
    pub git_author_email: Option<String>,
    /// SQS long-poll wait, 0 to 20 seconds [default: 20]
    #[arg(long, env = "JANITOR_POLL_WAIT_SECONDS")]
    pub poll_wait_seconds: Option<u64>,
    /// Visibility a taken message is kept at, renewed every third of it [default: 120]
    #[arg(long, env = "JANITOR_VISIBILITY_TIMEOUT_SECONDS")]
    pub visibility_timeout_seconds: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when a container must stop [default: 120]
    #[arg(long, env = "JANITOR_STOP_GRACE_SECONDS")]
    pub stop_grace_seconds: Option<u64>,
    /// Seconds a rejected message stays hidden before SQS offers it again (and, after the
    /// queue's maxReceiveCount, moves it to the dead-letter queue) [default: 5]
    #[arg(long, env = "JANITOR_REJECT_RETRY_SECONDS")]
    pub reject_retry_seconds: Option<u64>,
    /// Seconds a job that ended `error` (not the repository's fault) stays hidden before SQS
    /// offers it again; after the queue's maxReceiveCount it goes to the dead-letter queue [default: 60]
    #[arg(long, env = "JANITOR_ERROR_RETRY_SECONDS")]
    pub error_retry_seconds: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when a job is interrupted (daemon stop, spot notice) [default: 90]
    #[arg(long, env = "JANITOR_INTERRUPT_GRACE_SECONDS")]
    pub interrupt_grace_seconds: Option<u64>,
    /// Idle this long with an empty queue, the instance lowers the group's capacity by one [default: 120]
    #[arg(long, env = "JANITOR_IDLE_TIMEOUT_SECONDS")]
    pub idle_timeout_seconds: Option<u64>,
    /// Seconds between instance-metadata checks (lifecycle state, spot notice) [default: 5]
    #[arg(long, env = "JANITOR_IMDS_INTERVAL_SECONDS")]
    pub imds_interval_seconds: Option<u64>,
    /// Seconds between lifecycle heartbeats when the hook's timeout cannot be read [default: 60]
    #[arg(long, env = "JANITOR_LIFECYCLE_HEARTBEAT_SECONDS")]
    pub lifecycle_heartbeat_seconds: Option<u64>,
    /// File touched every few seconds for the dead-man timer [default: CACHE_DIR/janitord.heartbeat]
    #[arg(long, env = "JANITOR_HEARTBEAT_FILE")]
    pub heartbeat_file: Option<PathBuf>,
    /// Refuse to start when CACHE_DIR is not its own mount (the gp3 cache volume)
    #[arg(long, env = "JANITOR_REQUIRE_CACHE_VOLUME")]
    pub require_cache_volume: bool,
    /// Evict cached images above this share of the cache, percent [default: 80]
    #[arg(long, env = "JANITOR_CACHE_HIGH_WATERMARK_PERCENT")]
    pub cache_high_watermark_percent: Option<u64>,
    /// …until under this share, percent [default: 60]
    #[arg(long, env = "JANITOR_CACHE_LOW_WATERMARK_PERCENT")]
    pub cache_low_watermark_percent: Option<u64>,
    /// Budget the images janitord uses against this many bytes instead of the volume's size
    #[arg(long, env = "JANITOR_CACHE_BUDGET_BYTES")]
    pub cache_budget_bytes: Option<u64>,
    /// Images evicted last (base images); repeat, or comma-separate in the variable
    #[arg(
        long = "pinned-image",
        env = "JANITOR_PINNED_IMAGES",
        value_delimiter = ','
    )]
    pub pinned_images: Vec<String>,
    /// Unused images and build cache older than this are removed [default: 72]
    #[arg(long, env = "JANITOR_IMAGE_MAX_AGE_HOURS")]
    pub image_max_age_hours: Option<u64>,
    /// The daemon's temp files older than this are removed [default: 24]
    #[arg(long, env = "JANITOR_TEMP_MAX_AGE_HOURS")]
    pub temp_max_age_hours: Option<u64>,
    /// journald is vacuumed to this many days; 0 leaves it alone [default: 3]
    #[arg(long, env = "JANITOR_JOURNALD_DAYS")]
    pub journald_days: Option<u32>,
    /// Seconds between cleanups while idle (one also runs after every job) [default: 3600]
    #[arg(long, env = "JANITOR_CLEANUP_INTERVAL_SECONDS")]
    pub cleanup_interval_seconds: Option<u64>,
    /// Prune Docker machine-wide (stopped containers, dangling and old images, build cache,
    /// volumes) and vacuum journald: right on an instance janitord owns, wrong on a shared
    /// machine [default: true]
    #[arg(long, env = "JANITOR_DOCKER_PRUNE")]
    pub docker_prune: Option<bool>,
    /// No job is taken with less free space on the cache volume [default: 10737418240]
    #[arg(long, env = "JANITOR_MIN_FREE_BYTES")]
    pub min_free_bytes: Option<u64>,
    /// …or fewer free inodes [default: 250000]
    #[arg(long, env = "JANITOR_MIN_FREE_INODES")]
    pub min_free_inodes: Option<u64>,
    /// This instance should have GPUs: without a usable one it marks itself unhealthy
    #[arg(long, env = "JANITOR_EXPECT_GPUS")]
    pub expect_gpus: bool,
    /// Loopback address of /health and /metrics, or `off` [default: 127.0.0.1:9464]
    #[arg(long, env = "JANITOR_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Accept jobs whose repository URL is local (file://); for tests and single-machine use
    #[arg(long, env = "JANITOR_ALLOW_LOCAL_REPOS")]
    pub allow_local_repos: bool,
    /// Exit 0 once the queue is empty and no job is running
    #[arg(long, env = "JANITOR_EXIT_WHEN_IDLE")]
    pub exit_when_idle: bool,
    /// Use this instance id instead of asking IMDS (off EC2)
    #[arg(long, env = "JANITOR_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Tests only: abort right after restart recovery writes a crash record, as a SIGKILL
    /// there would (so a test can show the record is written before anything is removed)
    #[arg(long, hide = true, env = "JANITOR_TEST_KILL_AFTER_CRASH_RECORD")]
    pub test_kill_after_crash_record: bool,
    /// Log format [default: json when not on a terminal]
    #[arg(long, env = "JANITOR_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The TOML file's fields; the same names as the flags, in snake case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    queue_url: Option<String>,
    bucket: Option<String>,
    log_group: Option<String>,
    cache_dir: Option<PathBuf>,
    secrets_dir: Option<PathBuf>,
    github_api_url: Option<String>,
    github_git_url: Option<String>,
    status_target_url: Option<String>,
    agent_user: Option<String>,
    agent_memory_mib: Option<u64>,
    agent_cpus: Option<f64>,
    agent_pids: Option<u64>,
    agent_env: Option<Vec<String>>,
    agent_network: Option<String>,
    agent_bedrock_role_arn: Option<String>,
    agent_bedrock_region: Option<String>,
    prefetch_images: Option<Vec<String>>,
    default_agent_image: Option<String>,
    git_author_name: Option<String>,
    git_author_email: Option<String>,
    poll_wait_seconds: Option<u64>,
    visibility_timeout_seconds: Option<u64>,
    stop_grace_seconds: Option<u64>,
    reject_retry_seconds: Option<u64>,
    error_retry_seconds: Option<u64>,
    interrupt_grace_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    imds_interval_seconds: Option<u64>,
    lifecycle_heartbeat_seconds: Option<u64>,
    heartbeat_file: Option<PathBuf>,
    require_cache_volume: Option<bool>,
    cache_high_watermark_percent: Option<u64>,
    cache_low_watermark_percent: Option<u64>,
    cache_budget_bytes: Option<u64>,
    pinned_images: Option<Vec<String>>,
    image_max_age_hours: Option<u64>,
    temp_max_age_hours: Option<u64>,
    journald_days: Option<u32>,
    cleanup_interval_seconds: Option<u64>,
    docker_prune: Option<bool>,
    min_free_bytes: Option<u64>,
    min_free_inodes: Option<u64>,
    expect_gpus: Option<bool>,
    metrics_addr: Option<String>,
    allow_local_repos: Option<bool>,
    exit_when_idle: Option<bool>,
    instance_id: Option<String>,
    log_format: Option<LogFormat>,
}

/// The agent container's user and limits, each checked; a bad one is a problem naming it.
fn agent_limits(
    flags: &Flags,
    file: &FileSettings,
    problems: &mut Vec<String>,
) -> janitor_pipeline::agent::AgentLimits {
    let mut limits = janitor_pipeline::agent::AgentLimits::default();
    if let Some(user) = flags.agent_user.clone().or(file.agent_user.clone()) {
        let parsed = user
            .split_once(':')
            .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)));
        match parsed {
            Some((uid, gid)) if uid != 0 && gid != 0 => (limits.uid, limits.gid) = (uid, gid),
            _ => problems.push(format!(
                "setting `agent_user` is `{user}`; it must be uid:gid with numbers other than 0 (root), such as 10001:10001"
            )),
        }
    }
    if let Some(mib) = flags.agent_memory_mib.or(file.agent_memory_mib) {
        if (256..=1 << 22).contains(&mib) {
            limits.memory_bytes = (mib as i64) << 20;
        } else {
            problems.push(format!(
                "setting `agent_memory_mib` is {mib}; it must be 256 to 4194304"
            ));
        }
    }
    if let Some(cpus) = flags.agent_cpus.or(file.agent_cpus) {
        if cpus > 0.0 && cpus <= 256.0 {
            limits.cpus = cpus;
        } else {
            problems.push(format!(
                "setting `agent_cpus` is {cpus}; it must be above 0 and at most 256"
            ));
        }
    }
    let env = if flags.agent_env.is_empty() {
        file.agent_env.clone().unwrap_or_default()
    } else {
        flags.agent_env.clone()
    };
    for e in &env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                limits.env.push(e.clone())
            }
            _ => problems.push(format!(
                "setting `agent_env` has `{e}`; each entry must be KEY=VALUE, such as ANTHROPIC_MODEL=claude-sonnet-4-5"
            )),
        }
    }
    limits.network = flags.agent_network.clone().or(file.agent_network.clone());
    if let Some(image) = flags
        .default_agent_image
        .clone()
        .or(file.default_agent_image.clone())
    {
        match janitor_model::names::check_image(&image) {
            Ok(()) => limits.default_image = Some(image),
            Err(e) => problems.push(format!("setting `default_agent_image`: {e}")),
        }
    }
    if let Some(pids) = flags.agent_pids.or(file.agent_pids) {
        if (64..=1 << 22).contains(&pids) {
            limits.pids = pids as i64;
        } else {
            problems.push(format!(
                "setting `agent_pids` is {pids}; it must be 64 to 4194304"
            ));
        }
    }
    limits
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub queue_url: String,
    pub bucket: String,
    pub log_group: String,
    pub cache_dir: PathBuf,
    pub secrets_dir: PathBuf,
    pub github_api_url: String,
    pub github_git_url: String,
    pub status_target_url: Option<String>,
    pub agent_limits: janitor_pipeline::agent::AgentLimits,
    /// The Bedrock role the agent's credentials are minted from, and the region; `None`: off.
    pub agent_bedrock: Option<(String, Option<String>)>,
    /// Pulled into the cache at start when absent.
    pub prefetch_images: Vec<String>,
    pub git_author_name: String,
    pub git_author_email: String,
    pub poll_wait: Duration,
    pub visibility_timeout: Duration,
    pub stop_grace: Duration,
    pub reject_retry: Duration,
    pub error_retry: Duration,
    pub interrupt_grace: Duration,
    pub idle_timeout: Duration,
    pub imds_interval: Duration,
    pub lifecycle_heartbeat: Duration,
    pub heartbeat_file: PathBuf,
    pub require_cache_volume: bool,
    pub cache_high_watermark: f64,
    pub cache_low_watermark: f64,
    pub cache_budget_bytes: Option<u64>,
    pub pinned_images: Vec<String>,
    pub image_max_age: Duration,
    pub temp_max_age: Duration,
    pub journald_days: u32,
    pub cleanup_interval: Duration,
    pub docker_prune: bool,
    pub min_free_bytes: u64,
    pub min_free_inodes: u64,
    pub expect_gpus: bool,
    /// `None` when turned off.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub allow_local_repos: bool,
    pub exit_when_idle: bool,
    pub instance_id: Option<String>,
    pub log_format: Option<LogFormat>,
    /// Tests only (see the flag).
    pub test_kill_after_crash_record: bool,
}

impl Settings {
    pub fn work_root(&self) -> PathBuf {
        self.cache_dir.join("workspaces")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.cache_dir.join("spool")
    }

    /// Where fixes are published: with the secrets directory's `GITHUB_TOKEN`, read when a job
    /// starts (so a rotated token is used at once); `None` without one.
    pub fn publish_settings(&self) -> Option<janitor_pipeline::publish::PublishSettings> {
        let token = std::fs::read_to_string(self.secrets_dir.join("GITHUB_TOKEN")).ok()?;
        let token = token.trim();
        (!token.is_empty()).then(|| janitor_pipeline::publish::PublishSettings {
            api_url: self.github_api_url.clone(),
            git_url: self.github_git_url.clone(),
            token: token.to_string(),
            author_name: self.git_author_name.clone(),
            author_email: self.git_author_email.clone(),
            status_target_url: self.status_target_url.clone(),
        })
    }

    /// Running jobs' output spools, read back by the log shipper and archived at the end.
    pub fn output_dir(&self) -> PathBuf {
        self.cache_dir.join("output")
    }

    /// The cleanup policy these settings describe.
    pub fn hygiene(&self) -> crate::hygiene::Policy {
        crate::hygiene::Policy {
            cache_dir: self.cache_dir.clone(),
            work_root: self.work_root(),
            spool_dir: self.spool_dir(),
            high_watermark: self.cache_high_watermark,
            low_watermark: self.cache_low_watermark,
            budget_bytes: self.cache_budget_bytes,
            pinned: self.pinned_images.clone(),
            image_max_age: self.image_max_age,
            build_cache_max_age: self.image_max_age,
            stopped_container_age: Duration::from_secs(3600),
            temp_max_age: self.temp_max_age,
            journald_days: self.journald_days,
            docker_prune: self.docker_prune,
            min_free_bytes: self.min_free_bytes,
            min_free_inodes: self.min_free_inodes,
        }
    }
}

/// Every settings problem, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct SettingsError(pub Vec<String>);

fn read_file(flags: &Flags) -> Result<(FileSettings, Option<PathBuf>), String> {
    let (path, explicit) = match &flags.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    if !explicit && !Path::new(&path).exists() {
        return Ok((FileSettings::default(), None));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: cannot read settings file: {e}", path.display()))?;
    let parsed: FileSettings = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        format!("{}:{line}: {}", path.display(), e.message())
    })?;
    Ok((parsed, Some(path)))
}

/// Builds the settings from flags (with their environment variables) and the file.
pub fn load(flags: &Flags) -> Result<Settings, SettingsError> {
    let (file, file_path) = read_file(flags).map_err(|e| SettingsError(vec![e]))?;
    let file_name = file_path
        .as_ref()
        .map_or(DEFAULT_CONFIG_FILE.to_string(), |p| p.display().to_string());
    let mut problems = Vec::new();
    let agent_limits = agent_limits(flags, &file, &mut problems);
    let agent_bedrock = match flags
        .agent_bedrock_role_arn
        .clone()
        .or(file.agent_bedrock_role_arn.clone())
    {
        Some(arn)
            if arn.starts_with("arn:") && arn.contains(":iam::") && arn.contains(":role/") =>
        {
            // The instance's region unless told otherwise (read here, once, with the flags).
            let region = flags
                .agent_bedrock_region
                .clone()
                .or(file.agent_bedrock_region.clone())
                .or_else(|| std::env::var("AWS_REGION").ok())
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok());
            Some((arn, region))
        }
        Some(arn) => {
            problems.push(format!(
                "setting `agent_bedrock_role_arn` is `{arn}`; it must be an IAM role ARN such as arn:aws:iam::123456789012:role/janitor-dev-agent-bedrock"
            ));
            None
        }
        None => None,
    };
    let mut required = |flag: Option<&String>, file: Option<String>, name: &str, var: &str| {
        match flag.cloned().or(file).filter(|s| !s.trim().is_empty()) {
            Some(v) => v,
            None => {
                problems.push(format!("missing setting `{name}`: pass --{}, set {var}, or add `{name}` to {file_name}", name.replace('_', "-")));
                String::new()
            }
        }
    };
    let queue_url = required(
        flags.queue_url.as_ref(),
        file.queue_url,
        "queue_url",
        "JANITOR_QUEUE_URL",
    );
    let bucket = required(
        flags.bucket.as_ref(),
        file.bucket,
        "bucket",
        "JANITOR_BUCKET",
    );
    let mut ranged =
        |name: &str, flag: Option<u64>, file: Option<u64>, default: u64, min: u64, max: u64| {
            let v = flag.or(file).unwrap_or(default);
            if v < min || v > max {
                problems.push(format!(
                    "setting `{name}` is {v}; it must be from {min} to {max}"
                ));
            }
            Duration::from_secs(v)
        };
    let poll_wait = ranged(
        "poll_wait_seconds",
        flags.poll_wait_seconds,
        file.poll_wait_seconds,
        20,
        0,
        20,
    );
    let visibility_timeout = ranged(
        "visibility_timeout_seconds",
        flags.visibility_timeout_seconds,
        file.visibility_timeout_seconds,
        120,
        6,
        43_200,
    );
    let stop_grace = ranged(
        "stop_grace_seconds",
        flags.stop_grace_seconds,
        file.stop_grace_seconds,
        120,
        0,
        3_600,
    );
    let reject_retry = ranged(
        "reject_retry_seconds",
        flags.reject_retry_seconds,
        file.reject_retry_seconds,
        5,
        0,
        43_200,
    );
    let error_retry = ranged(
        "error_retry_seconds",
        flags.error_retry_seconds,
        file.error_retry_seconds,
        60,
        0,
        43_200,
    );
    let interrupt_grace = ranged(
        "interrupt_grace_seconds",
        flags.interrupt_grace_seconds,
        file.interrupt_grace_seconds,
        90,
        0,
        110,
    );
    let idle_timeout = ranged(
        "idle_timeout_seconds",
        flags.idle_timeout_seconds,
        file.idle_timeout_seconds,
        120,
        1,
        86_400,
    );
    let imds_interval = ranged(
        "imds_interval_seconds",
        flags.imds_interval_seconds,
        file.imds_interval_seconds,
        5,
        1,
        60,
    );
    let lifecycle_heartbeat = ranged(
        "lifecycle_heartbeat_seconds",
        flags.lifecycle_heartbeat_seconds,
        file.lifecycle_heartbeat_seconds,
        60,
        5,
        3_600,
    );
    let pct = |name: &str,
               flag: Option<u64>,
               file: Option<u64>,
               default: u64,
               problems: &mut Vec<String>| {
        let v = flag.or(file).unwrap_or(default);
        if !(1..=99).contains(&v) {
            problems.push(format!(
                "setting `{name}` is {v}; it must be a percentage from 1 to 99"
            ));
        }
        v as f64 / 100.0
    };
    let high = pct(
        "cache_high_watermark_percent",
        flags.cache_high_watermark_percent,
        file.cache_high_watermark_percent,
        80,
        &mut problems,
    );
    let low = pct(
        "cache_low_watermark_percent",
        flags.cache_low_watermark_percent,
        file.cache_low_watermark_percent,
        60,
        &mut problems,
    );
    if low >= high {
        problems.push(format!("setting `cache_low_watermark_percent` ({}) must be below `cache_high_watermark_percent` ({})", (low * 100.0).round(), (high * 100.0).round()));
    }
    let metrics_text = flags
        .metrics_addr
        .clone()
        .or(file.metrics_addr)
        .unwrap_or_else(|| "127.0.0.1:9464".to_string());
    let metrics_addr = if metrics_text == "off" {
        None
    } else {
        match metrics_text.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => Some(a),
            Ok(a) => {
                problems.push(format!("setting `metrics_addr` is {a}; it must be a loopback address (reach it through SSM port forwarding) or `off`"));
                None
            }
            Err(_) => {
                problems.push(format!("setting `metrics_addr` is `{metrics_text}`; write it like 127.0.0.1:9464, or `off`"));
                None
            }
        }
    };
    if let Some(0) = flags.cache_budget_bytes.or(file.cache_budget_bytes) {
        problems.push(
            "setting `cache_budget_bytes` is 0; leave it out to budget against the volume"
                .to_string(),
        );
    }
    if !problems.is_empty() {
        return Err(SettingsError(problems));
    }
    let hours = |flag: Option<u64>, file: Option<u64>, default: u64| {
        Duration::from_secs(flag.or(file).unwrap_or(default) * 3600)
    };
    let cache_dir = flags
        .cache_dir
        .clone()
        .or(file.cache_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR));
    Ok(Settings {
        require_cache_volume: flags.require_cache_volume
            || file.require_cache_volume.unwrap_or(false),
        cache_high_watermark: high,
        cache_low_watermark: low,
        cache_budget_bytes: flags.cache_budget_bytes.or(file.cache_budget_bytes),
        pinned_images: if flags.pinned_images.is_empty() {
            file.pinned_images.unwrap_or_default()
        } else {
            flags.pinned_images.clone()
        },
        image_max_age: hours(flags.image_max_age_hours, file.image_max_age_hours, 72),
        temp_max_age: hours(flags.temp_max_age_hours, file.temp_max_age_hours, 24),
        journald_days: flags.journald_days.or(file.journald_days).unwrap_or(3),
        cleanup_interval: Duration::from_secs(
            flags
                .cleanup_interval_seconds
                .or(file.cleanup_interval_seconds)
                .unwrap_or(3600)
                .max(60),
        ),
        docker_prune: flags.docker_prune.or(file.docker_prune).unwrap_or(true),
        min_free_bytes: flags
            .min_free_bytes
            .or(file.min_free_bytes)
            .unwrap_or(10 << 30),
        min_free_inodes: flags
            .min_free_inodes
            .or(file.min_free_inodes)
            .unwrap_or(250_000),
        expect_gpus: flags.expect_gpus || file.expect_gpus.unwrap_or(false),
        metrics_addr,
        heartbeat_file: flags
            .heartbeat_file
            .clone()
            .or(file.heartbeat_file)
            .unwrap_or_else(|| cache_dir.join("janitord.heartbeat")),
        cache_dir,
        secrets_dir: flags
            .secrets_dir
            .clone()
            .or(file.secrets_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SECRETS_DIR)),
        github_api_url: flags
            .github_api_url
            .clone()
            .or(file.github_api_url)
            .unwrap_or_else(|| "https://api.github.com".to_string()),
        status_target_url: flags
            .status_target_url
            .clone()
            .or(file.status_target_url)
            .filter(|u| !u.is_empty()),
        github_git_url: flags
            .github_git_url
            .clone()
            .or(file.github_git_url)
            .unwrap_or_else(|| "https://github.com".to_string())
            .trim_end_matches('/')
            .to_string(),
        agent_limits,
        agent_bedrock,
        prefetch_images: if flags.prefetch_images.is_empty() {
            file.prefetch_images.clone().unwrap_or_default()
        } else {
            flags.prefetch_images.clone()
        },
        git_author_name: flags
            .git_author_name
            .clone()
            .or(file.git_author_name)
            .unwrap_or_else(|| "janitor".to_string()),
        git_author_email: flags
            .git_author_email
            .clone()
            .or(file.git_author_email)
            .unwrap_or_else(|| "janitor@users.noreply.github.com".to_string()),
        error_retry,
        interrupt_grace,
        idle_timeout,
        imds_interval,
        lifecycle_heartbeat,
        queue_url,
        bucket,
        log_group: flags
            .log_group
            .clone()
            .or(file.log_group)
            .unwrap_or_else(|| DEFAULT_LOG_GROUP.to_string()),
        poll_wait,
        visibility_timeout,
        stop_grace,
        reject_retry,
        allow_local_repos: flags.allow_local_repos || file.allow_local_repos.unwrap_or(false),
        exit_when_idle: flags.exit_when_idle || file.exit_when_idle.unwrap_or(false),
        instance_id: flags.instance_id.clone().or(file.instance_id),
        log_format: flags.log_format.or(file.log_format),
        test_kill_after_crash_record: flags.test_kill_after_crash_record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags_with(file: &Path) -> Flags {
        Flags {
            config: Some(file.to_path_buf()),
            ..Flags::default()
        }
    }

    #[test]
    fn file_then_flags_then_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.toml");
        std::fs::write(
            &path,
            "queue_url = 'q'\nbucket = 'b'\npoll_wait_seconds = 3\n",
        )
        .unwrap();
        let mut flags = flags_with(&path);
        flags.poll_wait_seconds = Some(1);
        let s = load(&flags).unwrap();
        assert_eq!((s.queue_url.as_str(), s.bucket.as_str()), ("q", "b"));
        assert_eq!(s.poll_wait, Duration::from_secs(1));
        assert_eq!(s.log_group, "/janitor-runner");
        assert_eq!(s.stop_grace, Duration::from_secs(120));
    }

    #[test]
    fn every_problem_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.toml");
        std::fs::write(&path, "poll_wait_seconds = 30\n").unwrap();
        let err = load(&flags_with(&path)).unwrap_err().to_string();
        let p = path.display();
        assert_eq!(
            err,
            format!("missing setting `queue_url`: pass --queue-url, set JANITOR_QUEUE_URL, or add `queue_url` to {p}\nmissing setting `bucket`: pass --bucket, set JANITOR_BUCKET, or add `bucket` to {p}\nsetting `poll_wait_seconds` is 30; it must be from 0 to 20")
        );
        std::fs::write(&path, "\nqueue = 'x'\n").unwrap();
        let err = load(&flags_with(&path)).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{p}:2: unknown field `queue`")),
            "{err}"
        );
        let err = load(&flags_with(&dir.path().join("missing.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read settings file"), "{err}");
    }
}
