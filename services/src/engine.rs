//! The container engine: the `ContainerEngine` trait (builds, runs with output line by line and
//! hard deadlines by stop-then-kill, pulls with registry credentials, images and prunes for the
//! cache budget) and its Docker implementation through the engine API (bollard).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, DeviceRequest, HostConfig, HostConfigLogConfig, PortBinding,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, BuildImageOptionsBuilder, CreateContainerOptionsBuilder,
    CreateImageOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    PruneBuildOptionsBuilder, PruneContainersOptionsBuilder, PruneImagesOptionsBuilder,
    PruneVolumesOptions, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    StopContainerOptionsBuilder, TopOptions, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::buildkit::{self, SecretStore};
use crate::error::ErrorKind;
use crate::registry::RegistryCredentials;
use http_body_util::BodyExt;
pub use janitor_model::config::Builder;

/// Label on every container `janitord` creates; restart recovery finds orphans by it.
pub const MANAGED_LABEL: &str = "janitor.managed";
/// Label naming the instance whose daemon created the container.
pub const INSTANCE_LABEL: &str = "janitor.instance";
/// The engine's json-file copy of a job container's output: at most this per file…
pub const CONTAINER_LOG_MAX_SIZE: &str = "10m";
/// …and this many files.
pub const CONTAINER_LOG_MAX_FILES: u32 = 3;
/// How long to keep reading a container's output after it has exited.
const LOG_DRAIN: Duration = Duration::from_secs(5);
/// How long a forced stop may take before it is given up on (after the grace).
const STOP_SLACK: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the Docker engine at its local socket: {0}")]
    Connect(#[source] BollardError),
    #[error("Docker {action} failed: {source}")]
    Api {
        action: &'static str,
        #[source]
        source: BollardError,
    },
    #[error("Docker {action} failed: {source}")]
    BuildKit {
        action: &'static str,
        #[source]
        source: buildkit::BuildKitError,
    },
    #[error("cannot pack the build context {path}: {source}")]
    Context {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    /// Whether a retry can help: an engine that cannot be reached or failed itself, yes; a
    /// refused request (bad Dockerfile path, no such image), no.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Connect(_) => ErrorKind::Unavailable,
            EngineError::Context { .. } => ErrorKind::Rejected,
            EngineError::BuildKit { source, .. } => match source {
                buildkit::BuildKitError::Connect { .. } => ErrorKind::Unavailable,
                buildkit::BuildKitError::Http { message, .. } if message.starts_with("4") => {
                    ErrorKind::Rejected
                }
                buildkit::BuildKitError::Http { .. } => ErrorKind::Unavailable,
            },
            EngineError::Api { source, .. } => match source {
                BollardError::DockerResponseServerError { status_code, .. } => {
                    crate::error::kind_of(*status_code, "")
                }
                BollardError::DockerStreamError { .. }
                | BollardError::DockerContainerWaitError { .. } => ErrorKind::Rejected,
                _ => ErrorKind::Unavailable,
            },
        }
    }
}

fn api(action: &'static str) -> impl FnOnce(BollardError) -> EngineError {
    move |source| EngineError::Api { action, source }
}

/// Why a running container was stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Deadline,
    Interrupted,
}

/// How a container run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerOutcome {
    pub exit_code: Option<i64>,
    pub stopped: Option<StopReason>,
}

/// How an image build ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOutcome {
    /// The builder's error message, when it failed.
    pub error: Option<String>,
    pub steps: u32,
    pub cache_hits: u32,
    pub stopped: Option<StopReason>,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildSpec<'a> {
    pub context_dir: &'a Path,
    /// Relative to the context.
    pub dockerfile: &'a str,
    pub tag: &'a str,
    pub labels: HashMap<String, String>,
    pub builder: Builder,
    /// The multi-stage target.
    pub target: Option<&'a str>,
    pub args: &'a [(String, String)],
    /// What `RUN --mount=type=secret` may read (BuildKit only).
    pub secrets: SecretStore,
    /// The Dockerfile as sent, in place of the file at `dockerfile` (its cache mounts given
    /// the repository's own ids); `None`: the file as it is.
    pub dockerfile_text: Option<&'a str>,
}

/// The engine's versions, read once when it is connected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineVersions {
    /// `20.10.24`, `27.3.1`.
    pub engine: String,
    /// The API version agreed on (`1.41`).
    pub api: String,
    /// BuildKit's version, where the engine lists it among its components.
    pub buildkit: Option<String>,
}

/// How long a container gets between SIGTERM and SIGKILL.
#[derive(Debug, Clone, Copy)]
pub struct Graces {
    /// When the job's hard timeout passes.
    pub deadline: Duration,
    /// When the job is interrupted (SIGTERM to the daemon, a spot notice).
    pub interrupt: Duration,
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub binds: Vec<String>,
    pub labels: HashMap<String, String>,
    pub gpu: bool,
    /// With `gpu`: how many of the instance's GPUs the container sees (`--gpus N`); `None`
    /// is all of them.
    pub gpu_count: Option<u32>,
    /// A TCP port of the container to publish on the host's loopback (an ephemeral port; see
    /// [`ContainerEngine::published`]).
    pub publish: Option<u16>,
    /// What the container may do and use; the default confines nothing.
    pub confine: Confinement,
}

/// Privileges and limits of a container whose code is not trusted (the agent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confinement {
    /// `uid:gid` to run as instead of the image's user.
    pub user: Option<String>,
    /// `--cap-drop ALL`.
    pub drop_all_capabilities: bool,
    /// `--security-opt no-new-privileges`.
    pub no_new_privileges: bool,
    /// `--read-only`.
    pub read_only_root: bool,
    /// tmpfs mounts: path and options (`/tmp` → `rw,nosuid,nodev,size=1g`).
    pub tmpfs: Vec<(String, String)>,
    /// Memory limit in bytes (swap included: none beyond it).
    pub memory_bytes: Option<i64>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// Most processes and threads at once.
    pub pids_limit: Option<i64>,
    /// Docker network mode (`bridge` when unset).
    pub network: Option<String>,
}

/// The longest the engine may take to open a BuildKit session or accept a build (the build
/// itself runs to the job's deadline).
pub const BUILDKIT_CALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);
/// The largest status message of a build's progress stream held in memory.
const MAX_STATUS_BYTES: usize = 64 * 1024 * 1024;

/// The longest line passed on whole; a longer one is passed on in pieces of this size, so a
/// stream with no newline never grows memory.
pub const MAX_LINE_BYTES: usize = 2 * 1024 * 1024;

/// Splits a byte stream into lines, holding back a partial last line of at most
/// [`MAX_LINE_BYTES`]; each byte is looked at once.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
    /// How much of `pending` is known to hold no newline.
    scanned: usize,
}

impl LineSplitter {
    pub fn push(&mut self, bytes: &[u8], out: &mut dyn FnMut(&str)) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = MAX_LINE_BYTES - self.pending.len();
            let take = rest.len().min(room);
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            let mut start = 0;
            while let Some(off) = self.pending[self.scanned..]
                .iter()
                .position(|b| *b == b'\n')
            {
                let end = self.scanned + off;
                let text = String::from_utf8_lossy(&self.pending[start..end]);
                out(text.trim_end_matches('\r'));
                start = end + 1;
                self.scanned = start;
            }
            self.pending.drain(..start);
            self.scanned = self.pending.len();
            if self.pending.len() >= MAX_LINE_BYTES {
                // Cut at a character boundary: back over at most three continuation bytes.
                let mut cut = self.pending.len();
                while cut > self.pending.len() - 3 && (self.pending[cut - 1] & 0xC0) == 0x80 {
                    cut -= 1;
                }
                if cut > 0 && self.pending[cut - 1] >= 0xC0 {
                    cut -= 1;
                }
                if cut == 0 {
                    cut = self.pending.len();
                }
                let text = String::from_utf8_lossy(&self.pending[..cut]).into_owned();
                out(&text);
                self.pending.drain(..cut);
                self.scanned = self.pending.len();
            }
        }
    }

    pub fn finish(&mut self, out: &mut dyn FnMut(&str)) {
        if !self.pending.is_empty() {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            self.scanned = 0;
            out(text.trim_end_matches('\r'));
        }
    }
}

/// A container's name and labels.
pub type Labelled = (String, HashMap<String, String>);

/// An image as the cache budget sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub id: String,
    pub size_bytes: u64,
    /// The image's environment (`KEY=value`), which carries `CUDA_VERSION` and
    /// `NVIDIA_REQUIRE_CUDA` for images on NVIDIA's bases.
    pub env: Vec<String>,
    /// The image's ENTRYPOINT and CMD, as words.
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: HashMap<String, String>,
}

/// The NVIDIA device request of a container that uses the GPU: every GPU (`--gpus all`), or
/// the first `gpu_count` (`--gpus N`).
fn gpu_request(spec: &ContainerSpec) -> Option<Vec<DeviceRequest>> {
    spec.gpu.then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".to_string()),
            count: Some(spec.gpu_count.map_or(-1, i64::from)),
            capabilities: Some(vec![vec![
                "gpu".to_string(),
                "utility".to_string(),
                "compute".to_string(),
            ]]),
            ..Default::default()
        }]
    })
}

/// One entry of the engine's image list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    pub id: String,
    pub tags: Vec<String>,
    /// Unix seconds.
    pub created: i64,
}

/// What a prune removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune {
    /// Stopped containers older than this.
    Containers(Duration),
    /// Untagged images older than this (a build in progress keeps its fresh ones).
    DanglingImages(Duration),
    /// Build cache older than this, or all of it (`None`).
    BuildCache(Option<Duration>),
    /// Build cache beyond this many bytes, least recently used first (`keep-storage`).
    BuildCacheKeep(u64),
    /// Volumes no container uses.
    Volumes,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    pub items: usize,
    pub bytes: u64,
}

/// The container engine, as narrow as the pipeline and the cache budget use it.
pub trait ContainerEngine: Send + Sync + Clone + 'static {
    /// Builds an image; the builder's own failure is in the outcome, not an `Err`.
    fn build(
        &self,
        spec: &BuildSpec<'_>,
        deadline: Instant,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> impl Future<Output = Result<BuildOutcome, EngineError>> + Send;
    /// Runs a container to its end (removed afterwards), stopping it at `deadline` or on
    /// `cancel`: SIGTERM, then SIGKILL after the grace.
    fn run(
        &self,
        spec: &ContainerSpec,
        deadline: Instant,
        grace: Graces,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> impl Future<Output = Result<ContainerOutcome, EngineError>> + Send;
    fn has_image(&self, image: &str) -> impl Future<Output = bool> + Send;
    /// The engine's versions (for the report, and for what its builder can parse).
    fn versions(&self) -> EngineVersions;
    /// Where a running container's published port is reached on the host; `None` while the
    /// container does not exist or is not running.
    fn published(
        &self,
        name: &str,
        port: u16,
    ) -> impl Future<Output = Result<Option<std::net::SocketAddr>, EngineError>> + Send;
    /// The host's process ids of a running container's processes.
    fn pids(&self, name: &str) -> impl Future<Output = Result<Vec<u32>, EngineError>> + Send;
    /// Pulls an image, logged in with `credentials` when given.
    fn pull(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Force-removes a container; a missing one is not an error.
    fn remove(&self, name: &str) -> impl Future<Output = ()> + Send;
    /// Containers of this instance's daemon, running or not: (name, labels).
    fn managed_containers(
        &self,
        instance: &str,
    ) -> impl Future<Output = Result<Vec<Labelled>, EngineError>> + Send;
    fn image(&self, reference: &str) -> impl Future<Output = Option<ImageFacts>> + Send;
    fn images(&self) -> impl Future<Output = Result<Vec<ImageEntry>, EngineError>> + Send;
    fn remove_image(&self, reference: &str)
        -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Image ids of containers: running ones only, or all (`all`).
    fn images_in_use(
        &self,
        all: bool,
    ) -> impl Future<Output = Result<HashSet<String>, EngineError>> + Send;
    fn prune(&self, what: Prune) -> impl Future<Output = Result<Pruned, EngineError>> + Send;
    /// What the builder's cache holds on disk (BuildKit's cache mounts and layers).
    fn build_cache_bytes(&self) -> impl Future<Output = Result<u64, EngineError>> + Send;
}

/// The local Docker engine.
#[derive(Clone)]
pub struct DockerEngine {
    docker: Docker,
    socket: std::path::PathBuf,
    versions: EngineVersions,
}

impl DockerEngine {
    /// Connects to the local socket (`DOCKER_HOST` is honoured) and agrees on an API version,
    /// so older engines answer too.
    pub async fn connect() -> Result<Self, EngineError> {
        let docker = Docker::connect_with_local_defaults().map_err(EngineError::Connect)?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(EngineError::Connect)?;
        let version = docker.version().await.map_err(EngineError::Connect)?;
        let buildkit = version
            .components
            .iter()
            .flatten()
            .find(|c| c.name.eq_ignore_ascii_case("buildkit"))
            .map(|c| c.version.clone());
        let versions = EngineVersions {
            engine: version.version.unwrap_or_default(),
            api: docker.client_version().to_string(),
            buildkit,
        };
        Ok(DockerEngine {
            docker,
            socket: buildkit::socket_path(),
            versions,
        })
    }
}

impl DockerEngine {
    /// The classic builder: its `Step n/m` and `Using cache` lines count the steps and hits.
    async fn build_classic(
        &self,
        spec: &BuildSpec<'_>,
        context: Vec<u8>,
        deadline: Instant,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<BuildOutcome, EngineError> {
        let args: HashMap<&str, &str> = spec
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut options = BuildImageOptionsBuilder::default()
            .dockerfile(spec.dockerfile)
            .t(spec.tag)
            .rm(true)
            .forcerm(true)
            .labels(&spec.labels)
            .buildargs(&args);
        if let Some(target) = spec.target {
            options = options.target(target);
        }
        let options = options.build();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context.into())));
        let mut outcome = BuildOutcome::default();
        let mut lines = LineSplitter::default();
        let mut on_build_line = |line: &str| {
            if line.starts_with("Step ") {
                outcome.steps += 1;
            } else if line.trim() == "---> Using cache" {
                outcome.cache_hits += 1;
            }
            on_line(line);
        };
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    None => break,
                    Some(Ok(info)) => {
                        if let Some(text) = info.stream.as_deref() {
                            lines.push(text.as_bytes(), &mut on_build_line);
                        }
                        if let Some(err) = info.error {
                            lines.finish(&mut on_build_line);
                            on_build_line(&err);
                            outcome.error = Some(err);
                        }
                    }
                    Some(Err(e)) => {
                        lines.finish(&mut on_build_line);
                        outcome.error = Some(match e {
                            BollardError::DockerStreamError { error } => error,
                            other => other.to_string(),
                        });
                        break;
                    }
                },
                reason = stop_signal(deadline, cancel) => {
                    outcome.stopped = Some(reason);
                    break;
                }
            }
        }
        lines.finish(&mut on_build_line);
        Ok(outcome)
    }

    /// BuildKit: a session serving the job's secrets, then `/build?version=2`; its status
    /// stream gives the progress lines, the steps and the cache hits.
    async fn build_buildkit(
        &self,
        spec: &BuildSpec<'_>,
        context: Vec<u8>,
        deadline: Instant,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<BuildOutcome, EngineError> {
        let bk = |action: &'static str| {
            move |e: buildkit::BuildKitError| EngineError::BuildKit { action, source: e }
        };
        let late = |action: &'static str| {
            move |_| EngineError::BuildKit {
                action,
                source: buildkit::BuildKitError::Http {
                    action,
                    message: format!(
                        "the engine did not answer within {} s",
                        BUILDKIT_CALL_LIMIT.as_secs()
                    ),
                },
            }
        };
        let session = tokio::time::timeout(
            BUILDKIT_CALL_LIMIT,
            buildkit::Session::open(&self.socket, &self.versions.api, spec.secrets.clone()),
        )
        .await
        .map_err(late("open a build session"))?
        .map_err(bk("open a build session"))?;
        let query = buildkit::BuildQuery {
            dockerfile: spec.dockerfile.to_string(),
            tag: spec.tag.to_string(),
            target: spec.target.map(str::to_string),
            build_args: spec.args.to_vec(),
            labels: spec.labels.clone(),
            session: session.id.clone(),
        };
        let mut outcome = BuildOutcome::default();
        let mut body = tokio::time::timeout(
            BUILDKIT_CALL_LIMIT,
            buildkit::start_build(&self.socket, &self.versions.api, &query, context),
        )
        .await
        .map_err(late("build"))?
        .map_err(bk("build"))?;
        let mut progress = buildkit::Progress::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut handle =
            |line: &[u8], outcome: &mut BuildOutcome, on_line: &mut (dyn FnMut(&str) + Send)| {
                match buildkit::parse_event(line) {
                    Some(buildkit::BuildEvent::Status(status)) => progress.apply(&status, on_line),
                    Some(buildkit::BuildEvent::Error(err)) => {
                        on_line(&format!("ERROR: {err}"));
                        outcome.error = Some(err);
                    }
                    Some(buildkit::BuildEvent::Text(text)) => {
                        for l in text.lines().filter(|l| !l.trim().is_empty()) {
                            on_line(l);
                        }
                    }
                    Some(buildkit::BuildEvent::ImageId(_)) | None => {}
                }
            };
        loop {
            tokio::select! {
                frame = body.frame() => match frame {
                    None => break,
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            if pending.len() + data.len() > MAX_STATUS_BYTES {
                                outcome.error = Some(format!(
                                    "the engine sent a build status message over {MAX_STATUS_BYTES} bytes"
                                ));
                                break;
                            }
                            pending.extend_from_slice(data);
                            while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                                let line: Vec<u8> = pending.drain(..=pos).collect();
                                handle(&line, &mut outcome, on_line);
                            }
                        }
                    }
                    Some(Err(e)) => {
                        outcome.error = Some(format!("the build's progress stream broke: {e}"));
                        break;
                    }
                },
                reason = stop_signal(deadline, cancel) => {
                    outcome.stopped = Some(reason);
                    break;
                }
            }
        }
        if !pending.is_empty() {
            handle(&pending, &mut outcome, on_line);
        }
        if let (Some(err), Some((name, _))) = (&outcome.error, &progress.failed_vertex) {
            outcome.error = Some(format!("{name}: {err}"));
        }
        outcome.steps = progress.steps;
        outcome.cache_hits = progress.cache_hits;
        drop(session);
        Ok(outcome)
    }
}

/// Resolves when a build must stop: its deadline passed, or the job is interrupted.
async fn stop_signal(deadline: Instant, cancel: &CancellationToken) -> StopReason {
    tokio::select! {
        () = tokio::time::sleep_until(deadline) => StopReason::Deadline,
        () = cancel.cancelled() => StopReason::Interrupted,
    }
}

/// The build context as a tar, packed off the async threads, after its size is checked
/// against [`crate::disk::MAX_TREE_BYTES`] (a context is held in memory while it is sent).
async fn context_tar(spec: &BuildSpec<'_>) -> Result<Vec<u8>, EngineError> {
    let dir = spec.context_dir.to_path_buf();
    let replaced = spec
        .dockerfile_text
        .map(|text| (PathBuf::from(spec.dockerfile), text.as_bytes().to_vec()));
    tokio::task::spawn_blocking(move || {
        crate::disk::tree_bytes(&dir, crate::disk::MAX_TREE_BYTES)
            .map_err(|e| std::io::Error::other(format!("the build context is too large: {e}")))?;
        pack_context(
            &dir,
            replaced.as_ref().map(|(p, b)| (p.as_path(), b.as_slice())),
        )
    })
    .await
    .map_err(|e| EngineError::Context {
        path: spec.context_dir.display().to_string(),
        source: std::io::Error::other(e),
    })?
    .map_err(|source| EngineError::Context {
        path: spec.context_dir.display().to_string(),
        source,
    })
}

impl ContainerEngine for DockerEngine {
    /// Builds `context_dir` with BuildKit, or with the classic builder when the spec asks.
    async fn build(
        &self,
        spec: &BuildSpec<'_>,
        deadline: Instant,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<BuildOutcome, EngineError> {
        let context = context_tar(spec).await?;
        match spec.builder {
            Builder::Buildkit => {
                self.build_buildkit(spec, context, deadline, cancel, on_line)
                    .await
            }
            Builder::Classic => {
                self.build_classic(spec, context, deadline, cancel, on_line)
                    .await
            }
        }
    }

    fn versions(&self) -> EngineVersions {
        self.versions.clone()
    }

    async fn build_cache_bytes(&self) -> Result<u64, EngineError> {
        let df = self
            .docker
            .df(None::<bollard::query_parameters::DataUsageOptions>)
            .await
            .map_err(api("read disk usage"))?;
        Ok(df
            .build_cache
            .iter()
            .flatten()
            .filter_map(|c| c.size.and_then(|b| u64::try_from(b).ok()))
            .sum())
    }

    /// True when the image is present locally.
    async fn has_image(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
    }

    /// Pulls an image that is not present locally.
    async fn pull(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<(), EngineError> {
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let auth = credentials.map(|c| bollard::auth::DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(c.server.clone()),
            ..Default::default()
        });
        let mut stream = self.docker.create_image(Some(options), None, auth);
        while let Some(item) = stream.next().await {
            item.map_err(api("pull"))?;
        }
        Ok(())
    }

    /// Runs a container to its end, delivering output lines as they come. At `deadline` or on
    /// `cancel` it is sent SIGTERM, then killed after `grace`. The container is removed afterwards.
    async fn run(
        &self,
        spec: &ContainerSpec,
        deadline: Instant,
        grace: Graces,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ContainerOutcome, EngineError> {
        let mut labels = spec.labels.clone();
        labels.insert(MANAGED_LABEL.to_string(), "true".to_string());
        let device_requests = gpu_request(spec);
        let port_key = spec.publish.map(|p| format!("{p}/tcp"));
        let c = &spec.confine;
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            user: c.user.clone(),
            exposed_ports: port_key
                .clone()
                .map(|k| HashMap::from([(k, HashMap::new())])),
            entrypoint: spec.entrypoint.clone(),
            cmd: spec.cmd.clone(),
            env: Some(spec.env.clone()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: Some(spec.binds.clone()),
                device_requests,
                // Loopback only, any free port: nothing outside the instance reaches the worker.
                port_bindings: port_key.map(|k| {
                    HashMap::from([(
                        k,
                        Some(vec![PortBinding {
                            host_ip: Some("127.0.0.1".to_string()),
                            host_port: Some(String::new()),
                        }]),
                    )])
                }),
                init: Some(true),
                cap_drop: c.drop_all_capabilities.then(|| vec!["ALL".to_string()]),
                security_opt: c
                    .no_new_privileges
                    .then(|| vec!["no-new-privileges:true".to_string()]),
                readonly_rootfs: c.read_only_root.then_some(true),
                tmpfs: (!c.tmpfs.is_empty()).then(|| c.tmpfs.iter().cloned().collect()),
                memory: c.memory_bytes,
                memory_swap: c.memory_bytes,
                nano_cpus: c.nano_cpus,
                pids_limit: c.pids_limit,
                network_mode: c.network.clone(),
                // The engine's own copy of the output is bounded (the job's output is read
                // through the attach stream, not from this file), so no job fills the disk.
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".to_string()),
                    config: Some(HashMap::from([
                        ("max-size".to_string(), CONTAINER_LOG_MAX_SIZE.to_string()),
                        ("max-file".to_string(), CONTAINER_LOG_MAX_FILES.to_string()),
                    ])),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let create = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        match self
            .docker
            .create_container(Some(create.clone()), body.clone())
            .await
        {
            Ok(_) => {}
            // A container of the same name can only be left over from an earlier attempt:
            // removed, then created again (one call fewer than removing first every time).
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                self.remove_container(&spec.name).await;
                self.docker
                    .create_container(Some(create), body)
                    .await
                    .map_err(api("create container"))?;
            }
            Err(e) => return Err(api("create container")(e)),
        }
        let outcome = self.drive(spec, deadline, grace, cancel, on_line).await;
        self.remove_container(&spec.name).await;
        outcome
    }

    async fn remove(&self, name: &str) {
        self.remove_container(name).await;
    }

    async fn published(
        &self,
        name: &str,
        port: u16,
    ) -> Result<Option<std::net::SocketAddr>, EngineError> {
        let info = match self
            .docker
            .inspect_container(
                name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(i) => i,
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(api("inspect container")(e)),
        };
        if !info.state.and_then(|s| s.running).unwrap_or(false) {
            return Ok(None);
        }
        let bindings = info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut p| p.remove(&format!("{port}/tcp")))
            .flatten()
            .unwrap_or_default();
        Ok(bindings.iter().find_map(|b| {
            let host_port: u16 = b.host_port.as_deref()?.parse().ok()?;
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], host_port)))
        }))
    }

    async fn pids(&self, name: &str) -> Result<Vec<u32>, EngineError> {
        let top = self
            .docker
            .top_processes(name, None::<TopOptions>)
            .await
            .map_err(api("list container processes"))?;
        let column = top
            .titles
            .unwrap_or_default()
            .iter()
            .position(|t| t == "PID")
            .unwrap_or(1);
        Ok(top
            .processes
            .unwrap_or_default()
            .iter()
            .filter_map(|row| row.get(column)?.parse().ok())
            .collect())
    }

    async fn managed_containers(&self, instance: &str) -> Result<Vec<Labelled>, EngineError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{MANAGED_LABEL}=true"),
                format!("{INSTANCE_LABEL}={instance}"),
            ],
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(api("list containers"))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let name = c
                    .names?
                    .into_iter()
                    .next()?
                    .trim_start_matches('/')
                    .to_string();
                Some((name, c.labels.unwrap_or_default()))
            })
            .collect())
    }

    async fn image(&self, reference: &str) -> Option<ImageFacts> {
        let i = self.docker.inspect_image(reference).await.ok()?;
        let config = i.config.unwrap_or_default();
        Some(ImageFacts {
            id: i.id.unwrap_or_default(),
            size_bytes: u64::try_from(i.size.unwrap_or(0)).unwrap_or(0),
            env: config.env.unwrap_or_default(),
            entrypoint: config.entrypoint.unwrap_or_default(),
            cmd: config.cmd.unwrap_or_default(),
            labels: config.labels.unwrap_or_default(),
        })
    }

    async fn images(&self) -> Result<Vec<ImageEntry>, EngineError> {
        let list = self
            .docker
            .list_images(Some(ListImagesOptionsBuilder::default().build()))
            .await
            .map_err(api("list images"))?;
        Ok(list
            .into_iter()
            .map(|i| ImageEntry {
                id: i.id,
                tags: i.repo_tags,
                created: i.created,
            })
            .collect())
    }

    async fn remove_image(&self, reference: &str) -> Result<(), EngineError> {
        let opts = RemoveImageOptionsBuilder::default().build();
        self.docker
            .remove_image(reference, Some(opts), None)
            .await
            .map(|_| ())
            .map_err(api("remove image"))
    }

    async fn images_in_use(&self, all: bool) -> Result<HashSet<String>, EngineError> {
        let opts = ListContainersOptionsBuilder::default().all(all).build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(api("list containers"))?;
        Ok(list.into_iter().filter_map(|c| c.image_id).collect())
    }

    async fn prune(&self, what: Prune) -> Result<Pruned, EngineError> {
        let until = |d: Duration| {
            HashMap::from([(
                "until".to_string(),
                vec![format!("{}h", d.as_secs().div_ceil(3600).max(1))],
            )])
        };
        let bytes = |v: Option<i64>| v.and_then(|b| u64::try_from(b).ok()).unwrap_or(0);
        match what {
            Prune::Containers(age) => {
                let f = until(age);
                let r = self
                    .docker
                    .prune_containers(Some(
                        PruneContainersOptionsBuilder::default().filters(&f).build(),
                    ))
                    .await
                    .map_err(api("prune stopped containers"))?;
                Ok(Pruned {
                    items: r.containers_deleted.map_or(0, |v| v.len()),
                    bytes: bytes(r.space_reclaimed),
                })
            }
            Prune::DanglingImages(age) => {
                let mut f = until(age);
                f.insert("dangling".to_string(), vec!["true".to_string()]);
                let r = self
                    .docker
                    .prune_images(Some(
                        PruneImagesOptionsBuilder::default().filters(&f).build(),
                    ))
                    .await
                    .map_err(api("prune dangling images"))?;
                Ok(Pruned {
                    items: r.images_deleted.map_or(0, |v| v.len()),
                    bytes: bytes(r.space_reclaimed),
                })
            }
            Prune::BuildCache(_) | Prune::BuildCacheKeep(_) => {
                let opts = match what {
                    Prune::BuildCache(Some(age)) => PruneBuildOptionsBuilder::default()
                        .filters(&until(age))
                        .build(),
                    Prune::BuildCacheKeep(keep) => PruneBuildOptionsBuilder::default()
                        .keep_storage(i64::try_from(keep).unwrap_or(i64::MAX))
                        .build(),
                    _ => PruneBuildOptionsBuilder::default().all(true).build(),
                };
                let r = self
                    .docker
                    .prune_build(Some(opts))
                    .await
                    .map_err(api("prune build cache"))?;
                Ok(Pruned {
                    items: r.caches_deleted.map_or(0, |v| v.len()),
                    bytes: bytes(r.space_reclaimed),
                })
            }
            Prune::Volumes => {
                let r = self
                    .docker
                    .prune_volumes(None::<PruneVolumesOptions>)
                    .await
                    .map_err(api("prune unused volumes"))?;
                Ok(Pruned {
                    items: r.volumes_deleted.map_or(0, |v| v.len()),
                    bytes: bytes(r.space_reclaimed),
                })
            }
        }
    }
}

impl DockerEngine {
    async fn drive(
        &self,
        spec: &ContainerSpec,
        deadline: Instant,
        grace: Graces,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ContainerOutcome, EngineError> {
        let name = spec.name.as_str();
        // Attached before it starts, as `docker run` does: every line comes through this
        // stream, whatever the log driver keeps or its rotation removes (a follow of the
        // json-file log loses what rotation deletes before it is read).
        let attach = AttachContainerOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        let attached = self
            .docker
            .attach_container(name, Some(attach))
            .await
            .map_err(api("attach to container"))?;
        let (mut logs, _stdin) = (attached.output, attached.input);
        self.docker
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(api("start container"))?;
        let wait_opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut wait = Box::pin(
            self.docker
                .wait_container(name, Some(wait_opts))
                .into_future(),
        );
        let (mut out, mut err) = (LineSplitter::default(), LineSplitter::default());
        let mut stopped = None;
        let mut stop_task: Option<tokio::task::JoinHandle<()>> = None;
        let mut logs_open = true;
        let hard_deadline = tokio::time::sleep_until(deadline);
        tokio::pin!(hard_deadline);
        let exit_code = loop {
            tokio::select! {
                chunk = logs.next(), if logs_open => match chunk {
                    Some(Ok(output)) => feed(&output, &mut out, &mut err, on_line),
                    Some(Err(e)) => {
                        tracing::warn!(container = name, error = %e, "container log stream broke; output from here on is lost");
                        logs_open = false;
                    }
                    None => logs_open = false,
                },
                (result, _) = &mut wait => break exit_code_of(result),
                () = &mut hard_deadline, if stopped.is_none() => {
                    stopped = Some(StopReason::Deadline);
                    stop_task = Some(self.spawn_stop(name, grace.deadline));
                }
                () = cancel.cancelled(), if stopped.is_none() => {
                    stopped = Some(StopReason::Interrupted);
                    stop_task = Some(self.spawn_stop(name, grace.interrupt));
                }
            }
        };
        if logs_open {
            let drain = async {
                while let Some(Ok(output)) = logs.next().await {
                    feed(&output, &mut out, &mut err, on_line);
                }
            };
            if tokio::time::timeout(LOG_DRAIN, drain).await.is_err() {
                tracing::warn!(
                    container = name,
                    "container output still open after exit; stopped reading it"
                );
            }
        }
        out.finish(on_line);
        err.finish(on_line);
        if let Some(task) = stop_task {
            task.abort();
        }
        Ok(ContainerOutcome { exit_code, stopped })
    }

    fn spawn_stop(&self, name: &str, grace: Duration) -> tokio::task::JoinHandle<()> {
        let docker = self.docker.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
            let opts = StopContainerOptionsBuilder::default().t(t).build();
            let stop = docker.stop_container(&name, Some(opts));
            match tokio::time::timeout(grace + STOP_SLACK, stop).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(container = %name, error = %e, "stop failed; killing"),
                Err(_) => tracing::warn!(container = %name, "stop did not finish; killing"),
            }
            let _ = docker
                .kill_container(
                    &name,
                    None::<bollard::query_parameters::KillContainerOptions>,
                )
                .await;
        })
    }
}

impl DockerEngine {
    /// Force-removes a container, ignoring "no such container".
    pub async fn remove_container(&self, name: &str) {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(()) => {}
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => tracing::warn!(container = name, error = %e, "could not remove container"),
        }
    }
}

fn feed(
    output: &bollard::container::LogOutput,
    out: &mut LineSplitter,
    err: &mut LineSplitter,
    on_line: &mut (dyn FnMut(&str) + Send),
) {
    use bollard::container::LogOutput;
    match output {
        LogOutput::StdErr { message } => err.push(message, on_line),
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            out.push(message, on_line)
        }
        LogOutput::StdIn { .. } => {}
    }
}

fn exit_code_of(
    result: Option<Result<bollard::models::ContainerWaitResponse, BollardError>>,
) -> Option<i64> {
    match result {
        Some(Ok(r)) => Some(r.status_code),
        // bollard reports a non-zero exit as an error carrying the code.
        Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Some(code),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "waiting for the container failed");
            None
        }
        None => None,
    }
}

/// Tars a directory for the build API, leaving out the top-level `.git`: entries in name
/// order, links as links (never followed); FIFOs, devices and sockets are left out, never
/// opened (a build cannot copy them); `replaced` puts other bytes at one file's path (the
/// Dockerfile as sent).
fn pack_context(dir: &Path, replaced: Option<(&Path, &[u8])>) -> std::io::Result<Vec<u8>> {
    fn walk(
        builder: &mut tar::Builder<Vec<u8>>,
        root: &Path,
        rel: &Path,
        replaced: Option<(&Path, &[u8])>,
    ) -> std::io::Result<()> {
        let mut entries: Vec<std::fs::DirEntry> =
            std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let name = rel.join(entry.file_name());
            if rel.as_os_str().is_empty() && entry.file_name() == ".git" {
                continue;
            }
            let kind = entry.file_type()?;
            match replaced {
                Some((at, bytes)) if kind.is_file() && name == at => {
                    let mut header = tar::Header::new_gnu();
                    header.set_metadata(&entry.metadata()?);
                    header.set_size(bytes.len() as u64);
                    builder.append_data(&mut header, &name, bytes)?;
                }
                _ if kind.is_dir() => {
                    builder.append_path_with_name(entry.path(), &name)?;
                    walk(builder, root, &name, replaced)?;
                }
                _ if kind.is_file() || kind.is_symlink() => {
                    builder.append_path_with_name(entry.path(), &name)?
                }
                _ => {}
            }
        }
        Ok(())
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    walk(&mut builder, dir, Path::new(""), replaced)?;
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_say_whether_a_retry_helps() {
        let server = |status_code| EngineError::Api {
            action: "build",
            source: BollardError::DockerResponseServerError {
                status_code,
                message: "m".into(),
            },
        };
        assert_eq!(server(500).kind(), ErrorKind::Unavailable);
        assert_eq!(server(404).kind(), ErrorKind::NotFound);
        assert_eq!(server(409).kind(), ErrorKind::Conflict);
        assert_eq!(server(400).kind(), ErrorKind::Rejected);
        let refused = EngineError::Connect(BollardError::IOError {
            err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        });
        assert!(refused.kind().retryable());
    }

    #[test]
    fn the_gpu_request_counts_devices() {
        let mut spec = ContainerSpec::default();
        assert_eq!(gpu_request(&spec), None);
        spec.gpu = true;
        assert_eq!(gpu_request(&spec).unwrap()[0].count, Some(-1));
        spec.gpu_count = Some(1);
        let r = gpu_request(&spec).unwrap();
        assert_eq!(
            (r[0].count, r[0].driver.as_deref()),
            (Some(1), Some("nvidia"))
        );
    }

    #[test]
    fn splitter_handles_partial_lines() {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        s.push(b"a\nb", &mut |l| got.push(l.to_string()));
        s.push(b"c\r\n\nd", &mut |l| got.push(l.to_string()));
        s.finish(&mut |l| got.push(l.to_string()));
        assert_eq!(got, ["a", "bc", "", "d"]);
    }

    #[test]
    fn a_line_without_end_is_split_never_grown() {
        let mut s = LineSplitter::default();
        let mut pieces = 0usize;
        let mut total = 0usize;
        let chunk = vec![b'x'; 64 * 1024];
        // 100 MiB with no newline: memory stays at one line's worth.
        for _ in 0..1600 {
            s.push(&chunk, &mut |l| {
                assert!(l.len() <= MAX_LINE_BYTES);
                pieces += 1;
                total += l.len();
            });
            assert!(s.pending.len() < MAX_LINE_BYTES);
        }
        s.finish(&mut |l| total += l.len());
        assert_eq!(total, 1600 * 64 * 1024, "nothing lost");
        assert_eq!(pieces, 50);
        // A multi-byte character is never cut in two.
        let mut s = LineSplitter::default();
        let mut text = vec![b'a'; MAX_LINE_BYTES - 1];
        text.extend_from_slice("é".as_bytes());
        let mut got = Vec::new();
        s.push(&text, &mut |l| got.push(l.to_string()));
        s.finish(&mut |l| got.push(l.to_string()));
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], "é");
    }

    #[test]
    fn context_leaves_out_git() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".git/objects")).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "x").unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a.py"), "print(1)").unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM x").unwrap();
        let bytes = pack_context(dir.path(), None).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .unwrap()
                    .display()
                    .to_string()
                    .trim_end_matches('/')
                    .to_string()
            })
            .collect();
        names.sort();
        assert_eq!(names, ["Dockerfile", "src", "src/a.py"]);
    }

    /// The Dockerfile as sent replaces the file at its path, nested or not; a link to
    /// `/dev/zero` is packed as a link, never followed; a FIFO is left out, never opened.
    #[test]
    fn the_dockerfile_as_sent_replaces_the_file_and_specials_are_not_opened() {
        use std::io::Read as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".runpod")).unwrap();
        std::fs::write(dir.path().join(".runpod/Dockerfile"), "FROM original").unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM top").unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            dir.path().join("fifo"),
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
        let bytes = pack_context(
            dir.path(),
            Some((Path::new(".runpod/Dockerfile"), b"FROM sent")),
        )
        .unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let kind = e.header().entry_type();
            let mut text = String::new();
            if kind.is_file() {
                e.read_to_string(&mut text).unwrap();
            }
            seen.push((path, format!("{kind:?}"), text));
        }
        let find = |p: &str| {
            seen.iter()
                .find(|(n, _, _)| n.trim_end_matches('/') == p)
                .unwrap()
        };
        assert_eq!(find(".runpod/Dockerfile").2, "FROM sent");
        assert_eq!(find("Dockerfile").2, "FROM top");
        assert_eq!(find("zero").1, "Symlink");
        assert!(!seen.iter().any(|(n, _, _)| n == "fifo"), "{seen:?}");
    }
}
