//! Test harness shared by the end-to-end tests: the moto fixture, the offline base image, local
//! git repositories and the real binaries. Missing Docker, moto or busybox is a loud failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod engine;
pub mod github;
pub mod model_api;
pub mod systemd_box;
pub mod terraform;

use janitor_model::config::{JobSpec, RepoRef};
use janitor_model::job::JobMessage;
use time::OffsetDateTime;

/// The image test repositories build `FROM`.
pub const BASE_IMAGE: &str = "janitor-test-base:latest";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("JANITOR_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with moto at {}: run `bash .ci/run` or `make test-deps` first (or set JANITOR_TEST_PYTHON)",
        venv.display()
    );
    venv
}

/// Runs an image-making script once at a time across test processes (it does nothing when its
/// image exists), failing with `hint` when it cannot.
fn run_image_script(script: &str, args: &[&str], image: &str, hint: &str) {
    let lock_path = std::env::temp_dir().join(format!("janitor-{script}.lock"));
    let lock = std::fs::File::create(&lock_path).unwrap();
    lock.lock().unwrap();
    let status = Command::new("bash")
        .arg(workspace_root().join("scripts").join(script))
        .args(args)
        .status()
        .expect("bash must be installed");
    assert!(status.success(), "could not build {image}: {hint}");
    drop(lock);
}

/// Builds the offline base image once per machine (file-locked across test processes).
pub fn ensure_base_image() {
    run_image_script(
        "base-image.sh",
        &[BASE_IMAGE],
        BASE_IMAGE,
        "is Docker running and busybox-static installed?",
    );
}

/// The image runpod-shaped test workers build `FROM`: Debian's Python with the real `runpod`
/// package (pinned in testkit/runpod-requirements.txt), made offline by scripts/runpod-image.sh.
pub fn runpod_image() -> String {
    let pin =
        std::fs::read_to_string(workspace_root().join("testkit/runpod-requirements.txt")).unwrap();
    let version = pin
        .lines()
        .find_map(|l| l.strip_prefix("runpod=="))
        .expect("testkit/runpod-requirements.txt pins runpod==X.Y.Z")
        .trim()
        .to_string();
    format!("janitor-runpod-base:{version}")
}

/// Builds the runpod test image once per machine (file-locked across test processes).
pub fn ensure_runpod_image() -> String {
    let image = runpod_image();
    run_image_script(
        "runpod-image.sh",
        &[],
        &image,
        "is Docker running and mmdebstrap installed (scripts/test-deps.sh)?",
    );
    image
}

/// An older runpod SDK whose server mode differs from the pin's: runpod 1.3.3 (what
/// worker-insanely-fast-whisper pins) answers `/runsync` without a `status`. Built like the
/// pinned image, once per machine.
pub const OLD_RUNPOD_SDK: &str = "1.3.3";

/// Builds the image of [`OLD_RUNPOD_SDK`] once per machine (file-locked across test processes).
pub fn ensure_old_runpod_image() -> String {
    let image = format!("janitor-runpod-base:{OLD_RUNPOD_SDK}");
    run_image_script(
        "runpod-image.sh",
        &[OLD_RUNPOD_SDK],
        &image,
        "is Docker running and mmdebstrap installed (scripts/test-deps.sh)?",
    );
    image
}

/// A `docker` CLI call that must succeed; returns stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI must be installed");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds a local image from a Dockerfile text (for agent images).
pub fn build_image(tag: &str, files: &[(&str, &str)]) {
    ensure_base_image();
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), files);
    docker(&["build", "-q", "-t", tag, dir.path().to_str().unwrap()]);
}

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        if name.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

/// Creates a git repository with one commit holding `files`; returns its `file://` URL.
pub fn git_repo(root: &Path, name: &str, files: &[(&str, &str)]) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    write_files(&dir, files);
    for args in [
        vec!["init", "-q", "-b", "main"],
        vec!["add", "-A"],
        vec![
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "user.name=t",
            "commit",
            "-qm",
            "init",
        ],
    ] {
        let st = Command::new("git")
            .args(&args)
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "git {args:?} failed in {}", dir.display());
    }
    format!("file://{}", dir.display())
}

/// `git -C dir ARGS`'s output; panics when git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Dockerfile on the base image whose default command runs `script` with sh.
pub fn dockerfile(script: &str) -> String {
    format!(
        "{}FROM {BASE_IMAGE}\nRUN echo layer > /layer\nCMD [\"sh\", \"-c\", {}]\n",
        build_nonce(),
        serde_json::to_string(script).unwrap()
    )
}

/// A Dockerfile comment unique to this test process: the build's inputs differ from any
/// earlier test run's on this machine, so a test that counts build steps sees a build, not an
/// image reused from a run before (the layers still come from the cache).
pub fn build_nonce() -> String {
    static NONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NONCE
        .get_or_init(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("# test run {}-{now}\n", std::process::id())
        })
        .clone()
}

/// A log sink that keeps every line a job wrote.
#[derive(Default)]
pub struct Lines(pub std::sync::Mutex<Vec<String>>);

impl janitor_services::logs::LogSink for Lines {
    fn line(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
}

impl Lines {
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Runs one job's pipeline in-process on the machine's engine (no GPU, anonymous pulls);
/// returns its report and every line it wrote.
pub async fn run_in_process(
    ctx: &janitor_pipeline::JobContext,
) -> (janitor_model::report::Report, Vec<String>) {
    let engine = engine::TestEngine::connect().await;
    let lines = Lines::default();
    let probe = janitor_services::gpu::Probe::none("no GPU in this test");
    let tools = janitor_pipeline::Tools {
        engine: &engine,
        registry: &janitor_services::registry::Anonymous,
        gpu: &probe,
        sink: &lines,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let report = janitor_pipeline::run_job(&tools, ctx, &cancel).await;
    (report, lines.take())
}

/// A worker that fails (`ERROR: model … not found`) until its `config.env` names the
/// weights its image has (`/models/tiny.bin`); returns its `file://` URL.
pub fn broken_worker(root: &Path, name: &str) -> String {
    git_repo(
        root,
        name,
        &[
            (
                "Dockerfile",
                &format!(
                    "FROM {BASE_IMAGE}\nRUN mkdir -p /models && echo weights > /models/tiny.bin\nCOPY config.env /config.env\nCOPY handler.sh /handler.sh\nCMD [\"sh\", \"/handler.sh\"]\n"
                ),
            ),
            ("config.env", "MODEL=/models/large.bin\n"),
            (
                "handler.sh",
                ". /config.env\nif [ -f \"$MODEL\" ]; then echo \"loaded $MODEL\"; else echo \"ERROR: model $MODEL not found\"; exit 1; fi\n",
            ),
        ],
    )
}

/// An agent script that fixes [`broken_worker`]: it points config.env at the baked weights.
pub const FIX_MODEL: &str = r#"sed -i 's#/models/large.bin#/models/tiny.bin#' /workspace/config.env
printf '{"status":"fixed","summary":"MODEL fixed"}' > "$JANITOR_RESULT""#;

/// janitor's own agent image (agent/), built by scripts/agent-image.sh from the
/// claude-agent-sdk wheel (file-locked across test processes); returns its tag.
pub fn ensure_agent_image() -> String {
    const TAG: &str = "janitor-agent:test";
    run_image_script(
        "agent-image.sh",
        &[TAG],
        TAG,
        "is Docker running, and PyPI reachable for the claude-agent-sdk wheel (scripts/test-deps.sh)?",
    );
    TAG.to_string()
}

/// An agent image running `script` (sh, `set -eu`) with the contract's environment.
pub fn agent_image(tag: &str, script: &str) {
    build_image(
        tag,
        &[
            ("agent.sh", &format!("#!/bin/sh\nset -eu\n{script}\n")),
            (
                "Dockerfile",
                &format!("FROM {BASE_IMAGE}\nCOPY agent.sh /agent.sh\nCMD [\"/agent.sh\"]\n"),
            ),
        ],
    );
}

/// One job's context for running the pipeline in-process: attempt 1 on a g5.xlarge of
/// `instance`, workspaces under `work_root`, 2 s graces, local repositories allowed.
pub fn job_context(
    job_id: &str,
    run_id: &str,
    spec: JobSpec,
    instance: &str,
    work_root: &Path,
) -> janitor_pipeline::JobContext {
    janitor_pipeline::JobContext {
        job: janitor_model::job::Job {
            job_id: job_id.into(),
            run_id: run_id.into(),
            spec,
            enqueued_at: OffsetDateTime::now_utc(),
        },
        attempt: 1,
        instance: janitor_model::report::InstanceInfo {
            id: instance.into(),
            instance_type: "g5.xlarge".into(),
            availability_zone: "us-east-1a".into(),
            lifecycle: "on-demand".into(),
        },
        work_root: work_root.to_path_buf(),
        graces: janitor_services::engine::Graces {
            deadline: Duration::from_secs(2),
            interrupt: Duration::from_secs(2),
        },
        allow_local_repos: true,
        log_ref: None,
        secrets_dir: work_root.join("secrets"),
        publish: None,
        secrets: Default::default(),
        agent_limits: Default::default(),
        agent_credentials: Vec::new(),
    }
}

/// A job spec for a local repository, no GPU, with a timeout.
pub fn spec(name: &str, url: &str, timeout: Duration) -> JobSpec {
    let repo = RepoRef {
        organization: "local".into(),
        name: name.into(),
        url: Some(url.into()),
        git_ref: None,
    };
    let mut spec = JobSpec::new(repo, timeout);
    spec.prompt = format!("check {name}");
    spec.gpu_required = false;
    spec
}

/// moto's server plus the project's fixture, one per test.
pub struct Fixture {
    child: Child,
    pub endpoint: String,
    pub queue_url: String,
    pub dlq_url: String,
    pub bucket: String,
    pub log_group: String,
    pub asg_name: String,
    /// Pools made with [`Fixture::start_with_pools`], as Terraform's `pools` output.
    pub pools: serde_json::Value,
    pub imds: std::sync::Mutex<HashMap<String, String>>,
    pub sdk: aws_config::SdkConfig,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fixture {
    /// Starts the fixture with the standard resources and one IMDS per instance
    /// (`id` or `id:type:az:lifecycle`).
    pub async fn start(instances: &[&str]) -> Fixture {
        Fixture::start_with_pools(instances, &[]).await
    }

    /// [`Fixture::start`] plus pools (`name:instance_type:gpu_memory_gb[:max_instances]`), each
    /// with its queue, dead-letter queue and group, as Terraform makes them.
    pub async fn start_with_pools(instances: &[&str], pools: &[&str]) -> Fixture {
        Fixture::spawn(instances, pools, true).await
    }

    /// moto and the fixture with nothing made: for Terraform to make it all. The resource names
    /// are empty; read Terraform's outputs instead.
    pub async fn bare() -> Fixture {
        Fixture::spawn(&[], &[], false).await
    }

    async fn spawn(instances: &[&str], pools: &[&str], setup: bool) -> Fixture {
        let mut cmd = Command::new(python());
        cmd.arg(workspace_root().join("testkit/fixture.py"));
        if setup {
            cmd.arg("--setup");
        }
        for i in instances {
            cmd.arg("--instance").arg(i);
        }
        for p in pools {
            cmd.arg("--pool").arg(p);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start the moto fixture");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the moto fixture did not start (is moto[server] installed in .venv?): {e}: {line:?}"));
        let s = |k: &str| ready[k].as_str().unwrap_or_default().to_string();
        let imds = ready["imds"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(s("endpoint"))
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "fixture",
            ))
            .load()
            .await;
        Fixture {
            child,
            endpoint: s("endpoint"),
            queue_url: s("queue_url"),
            dlq_url: s("dlq_url"),
            bucket: s("bucket"),
            log_group: s("log_group"),
            asg_name: s("asg_name"),
            pools: ready["pools"].clone(),
            imds: std::sync::Mutex::new(imds),
            sdk,
        }
    }

    /// Environment for a `janitord` on `instance`, or for `janitorctl` with `instance` None.
    pub fn env(&self, instance: Option<&str>) -> Vec<(String, String)> {
        let mut env = aws_env(&self.endpoint);
        env.push(("JANITOR_QUEUE_URL".into(), self.queue_url.clone()));
        env.push(("JANITOR_BUCKET".into(), self.bucket.clone()));
        if instance.is_none() {
            env.push(("JANITOR_DLQ_URL".into(), self.dlq_url.clone()));
            env.push(("JANITOR_ASG_NAME".into(), self.asg_name.clone()));
        }
        if let Some(i) = instance {
            // Daemons of parallel tests share this machine: no fixed metrics port, no journald
            // vacuum or machine-wide Docker pruning, floors a test machine meets, and a cache
            // budget (1 TiB) far above what they use, so that a machine whose disk is past the
            // high watermark does not make one test's daemon evict an image (the shared agent
            // image) another test is about to run. Tests that need otherwise pass flags.
            for (k, v) in [
                ("JANITOR_METRICS_ADDR", "off"),
                ("JANITOR_JOURNALD_DAYS", "0"),
                ("JANITOR_DOCKER_PRUNE", "false"),
                ("JANITOR_MIN_FREE_BYTES", "1048576"),
                ("JANITOR_MIN_FREE_INODES", "100"),
                ("JANITOR_CACHE_BUDGET_BYTES", "1099511627776"),
            ] {
                env.push((k.into(), v.into()));
            }
            let url = self
                .imds
                .lock()
                .unwrap()
                .get(i)
                .cloned()
                .unwrap_or_else(|| {
                    panic!("no IMDS for {i}: start the fixture with it or call add_imds")
                });
            env.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), url));
        }
        env
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    pub fn asg(&self) -> aws_sdk_autoscaling::Client {
        aws_sdk_autoscaling::Client::new(&self.sdk)
    }

    /// The group's desired capacity and its instances' (id, lifecycle state, protected).
    pub async fn group(&self) -> (i32, Vec<(String, String, bool)>) {
        self.group_of(&self.asg_name).await
    }

    /// [`Fixture::group`] of the group named `name` (a pool's).
    pub async fn group_of(&self, name: &str) -> (i32, Vec<(String, String, bool)>) {
        let out = self
            .asg()
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .unwrap();
        let g = &out.auto_scaling_groups()[0];
        let instances = g
            .instances()
            .iter()
            .map(|i| {
                (
                    i.instance_id().unwrap().to_string(),
                    i.lifecycle_state().unwrap().as_str().to_string(),
                    i.protected_from_scale_in().unwrap_or(false),
                )
            })
            .collect();
        (g.desired_capacity().unwrap(), instances)
    }

    pub async fn set_desired(&self, n: i32) {
        self.asg()
            .set_desired_capacity()
            .auto_scaling_group_name(&self.asg_name)
            .desired_capacity(n)
            .send()
            .await
            .unwrap();
    }

    pub fn logs(&self) -> aws_sdk_cloudwatchlogs::Client {
        aws_sdk_cloudwatchlogs::Client::new(&self.sdk)
    }

    /// Sends one job message; returns its job id.
    pub async fn send_job(&self, run_id: &str, spec: &JobSpec) -> String {
        let job_id = janitor_model::ledger::new_job_id(&spec.repo.name);
        let msg = JobMessage::new(
            job_id.clone(),
            run_id.into(),
            spec,
            OffsetDateTime::now_utc(),
        );
        self.send_raw(&serde_json::to_string(&msg).unwrap()).await;
        job_id
    }

    pub async fn send_raw(&self, body: &str) {
        self.sqs()
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    /// Every key under `prefix`, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self
            .s3()
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            keys.extend(
                page.unwrap()
                    .contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        keys.sort();
        keys
    }

    /// Stores a Secrets Manager secret.
    pub async fn put_secret(&self, name: &str, value: &str) {
        aws_sdk_secretsmanager::Client::new(&self.sdk)
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }

    /// Stores an SSM SecureString parameter.
    pub async fn put_parameter(&self, name: &str, value: &str) {
        aws_sdk_ssm::Client::new(&self.sdk)
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .unwrap();
    }

    /// An object's bytes.
    pub async fn bytes(&self, key: &str) -> Vec<u8> {
        let obj = self
            .s3()
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("no s3 object {key}: {e:?}"));
        obj.body.collect().await.unwrap().into_bytes().to_vec()
    }

    /// Every message of a log stream, in order, page after page.
    pub async fn all_log_lines(&self, stream: &str) -> Vec<String> {
        let mut lines = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .logs()
                .get_log_events()
                .log_group_name(&self.log_group)
                .log_stream_name(stream)
                .start_from_head(true)
                .limit(10_000)
                .set_next_token(token.clone())
                .send()
                .await
                .unwrap();
            lines.extend(
                out.events()
                    .iter()
                    .filter_map(|e| e.message().map(str::to_string)),
            );
            let next = out.next_forward_token().map(str::to_string);
            if next == token || out.events().is_empty() {
                return lines;
            }
            token = next;
        }
    }

    pub async fn json(&self, key: &str) -> serde_json::Value {
        serde_json::from_slice(&self.bytes(key).await).unwrap()
    }

    /// Waits until `key` exists in the bucket, then reads it.
    pub async fn wait_for_json(&self, key: &str, limit: Duration) -> serde_json::Value {
        eventually(limit, key, || async {
            (!self.keys(key).await.is_empty()).then_some(())
        })
        .await;
        self.json(key).await
    }

    /// The messages of a log stream, in order.
    pub async fn log_lines(&self, stream: &str) -> Vec<String> {
        self.all_log_lines(stream).await
    }

    /// Waits until a job's log stream holds exactly `line`.
    pub async fn wait_for_log_line(&self, stream: &str, line: &str) {
        eventually(Duration::from_secs(60), line, || async {
            let out = self
                .logs()
                .get_log_events()
                .log_group_name(&self.log_group)
                .log_stream_name(stream)
                .send()
                .await
                .ok()?;
            out.events()
                .iter()
                .any(|e| e.message() == Some(line))
                .then_some(())
        })
        .await;
    }

    /// Visible and in-flight counts of a queue.
    pub async fn depth(&self, queue_url: &str) -> (u64, u64) {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .sqs()
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let get = |a: A| out.attributes().unwrap().get(&a).unwrap().parse().unwrap();
        (
            get(A::ApproximateNumberOfMessages),
            get(A::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Sets an IMDS field of the fixture (`target-lifecycle-state`, `spot-instance-action`, ...).
    pub fn set_imds(&self, instance: &str, field: &str, body: &str) {
        http(
            &self.endpoint,
            "PUT",
            &format!("/_fixture/imds/{instance}/{field}"),
            body,
        );
    }

    /// Gives an instance (one moto's ASG launched) its own IMDS.
    pub fn add_imds(&self, instance: &str) {
        let out: serde_json::Value = serde_json::from_str(&http(
            &self.endpoint,
            "POST",
            &format!("/_fixture/imds/{instance}"),
            "",
        ))
        .unwrap();
        self.imds.lock().unwrap().insert(
            instance.to_string(),
            out["url"].as_str().unwrap().to_string(),
        );
    }

    /// Raises the group to `n` and returns its instance ids, each with an IMDS.
    pub async fn launch(&self, n: i32) -> Vec<String> {
        self.set_desired(n).await;
        self.instances_of(&self.asg_name).await
    }

    /// The instance ids of the group `name`, each given an IMDS.
    pub async fn instances_of(&self, name: &str) -> Vec<String> {
        let ids: Vec<String> = self
            .group_of(name)
            .await
            .1
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        for id in &ids {
            if !self.imds.lock().unwrap().contains_key(id) {
                self.add_imds(id);
            }
        }
        ids
    }

    /// How a client reaches AWS here: moto's endpoint, test credentials, the region.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        aws_env(&self.endpoint)
    }

    /// How a janitord on `instance` reaches AWS here: moto's endpoint, test credentials, the
    /// region and the instance's IMDS; nothing else (its settings are its TOML's).
    pub fn aws_env_for(&self, instance: &str) -> Vec<(String, String)> {
        let mut env = aws_env(&self.endpoint);
        let url = self.imds.lock().unwrap().get(instance).cloned();
        let url = url.unwrap_or_else(|| panic!("no IMDS for {instance}: call add_imds"));
        env.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), url));
        env
    }

    /// What Terraform's variables need of moto: its default VPC, two subnets and an AMI, as
    /// `{"vpc_id", "subnet_ids", "ami_id"}`.
    pub fn ec2_defaults(&self) -> serde_json::Value {
        serde_json::from_str(&http(&self.endpoint, "GET", "/_fixture/ec2/defaults", "")).unwrap()
    }

    /// The user data of a launch template's latest version, decoded, as EC2 stores it.
    pub fn user_data(&self, launch_template_id: &str) -> String {
        http(
            &self.endpoint,
            "GET",
            &format!("/_fixture/ec2/user-data/{launch_template_id}"),
            "",
        )
    }

    /// The instance refreshes started (the fixture answers them: moto has none).
    pub fn instance_refreshes(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&http(
            &self.endpoint,
            "GET",
            "/_fixture/instance-refreshes",
            "",
        ))
        .unwrap()
    }

    /// Lifecycle actions the fixture recorded.
    /// Makes the next `count` requests for `action` (an API name, or `S3:{METHOD}`) fail with
    /// HTTP `status` and the service error `code`, as the real service would answer.
    pub fn fail_next(&self, action: &str, status: u16, code: &str, count: u32) {
        let spec =
            serde_json::json!({"match": action, "status": status, "code": code, "count": count});
        http(
            &self.endpoint,
            "POST",
            "/_fixture/faults",
            &spec.to_string(),
        );
    }

    /// Serves the next `count` requests for `action`, but holds each answer back `seconds`.
    pub fn delay_next(&self, action: &str, seconds: f64, count: u32) {
        let spec = serde_json::json!({"match": action, "delay": seconds, "count": count});
        http(
            &self.endpoint,
            "POST",
            "/_fixture/faults",
            &spec.to_string(),
        );
    }

    /// How often the faults for `action` fired so far.
    pub fn faults_fired(&self, action: &str) -> u64 {
        let all: Vec<serde_json::Value> =
            serde_json::from_str(&http(&self.endpoint, "GET", "/_fixture/faults", "")).unwrap();
        all.iter()
            .filter(|f| f["match"] == action)
            .map(|f| f["fired"].as_u64().unwrap_or(0))
            .sum()
    }

    pub fn lifecycle_actions(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&http(
            &self.endpoint,
            "GET",
            "/_fixture/lifecycle-actions",
            "",
        ))
        .unwrap()
    }
}

fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "false"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A minimal HTTP/1.1 call to the fixture's control API.
fn http(endpoint: &str, method: &str, path: &str, body: &str) -> String {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, rest) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    assert!(
        head.starts_with("HTTP/1.1 2") || head.starts_with("HTTP/1.0 2"),
        "fixture {method} {path}: {head}"
    );
    rest.to_string()
}

/// A running binary whose output is kept in a file, shown when a test fails.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    pub fn spawn(bin: &Path, args: &[&str], env: &[(String, String)]) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("output.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "HOME",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
            )
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Proc {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for exit; panics with the output if it takes longer than `limit`.
    pub fn wait(&mut self, limit: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "process did not exit within {limit:?}; output:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the output contains `text`; panics with the output after `limit`.
    pub fn wait_for_output(&self, text: &str, limit: Duration) {
        let start = Instant::now();
        while !self.output().contains(text) {
            assert!(
                start.elapsed() < limit,
                "`{text}` never appeared:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `janitord` (`bin`) for a fixture instance with the settings every test uses: local
/// repositories, 1 s polls, text logs, its own cache directory; `extra` adds or overrides.
pub fn spawn_janitord(
    bin: &Path,
    fx: &Fixture,
    instance: &str,
    cache: &Path,
    extra: &[&str],
) -> Proc {
    let cache = cache.to_str().unwrap();
    let mut args = vec![
        "--allow-local-repos",
        "--poll-wait-seconds",
        "1",
        "--log-format",
        "text",
        "--cache-dir",
        cache,
    ];
    args.extend_from_slice(extra);
    Proc::spawn(bin, &args, &fx.env(Some(instance)))
}

/// `janitord`, built beside `janitorctl` when the workspace's tests are built.
pub fn janitord_beside(janitorctl: &Path) -> PathBuf {
    let p = janitorctl.with_file_name("janitord");
    assert!(
        p.exists(),
        "{} is missing: run the tests for the whole workspace (`make test`)",
        p.display()
    );
    p
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
