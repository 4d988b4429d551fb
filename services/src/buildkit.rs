//! BuildKit builds through the engine's own API, as `docker buildx build` does against the
//! built-in builder: a session hijacked from `/session` that serves the job's build secrets and
//! a health check over HTTP/2, and `/build?version=2` whose progress is BuildKit's status stream
//! (vertices, their logs and whether each came from the cache), printed like `--progress=plain`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{
    health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse,
    HealthListRequest, HealthListResponse,
};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use bollard_buildkit_proto::moby::buildkit::v1::StatusResponse;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;

/// The header values BuildKit needs to call back into the session.
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const GET_SECRET: &str = "/moby.buildkit.secrets.v1.Secrets/GetSecret";

/// Why a BuildKit build could not be started or read.
#[derive(Debug, thiserror::Error)]
pub enum BuildKitError {
    #[error("cannot reach the Docker engine at {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Docker {action} failed: {message}")]
    Http {
        action: &'static str,
        message: String,
    },
}

/// The engine's API socket: `DOCKER_HOST` when it is a `unix://` address, else the default.
pub fn socket_path() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => PathBuf::from(&host["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// A connection to the engine's socket speaking HTTP/1.1, with upgrades allowed.
async fn connect(
    socket: &std::path::Path,
) -> Result<http1::SendRequest<Full<Bytes>>, BuildKitError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| BuildKitError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
    let (sender, conn) =
        http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BuildKitError::Http {
                action: "connect",
                message: e.to_string(),
            })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "engine connection ended");
        }
    });
    Ok(sender)
}

fn http_error(action: &'static str) -> impl Fn(&dyn std::fmt::Display) -> BuildKitError {
    move |e| BuildKitError::Http {
        action,
        message: e.to_string(),
    }
}

/// Sends `request` on a fresh connection to the engine.
async fn send(
    socket: &std::path::Path,
    action: &'static str,
    request: Result<hyper::Request<Full<Bytes>>, hyper::http::Error>,
) -> Result<hyper::Response<hyper::body::Incoming>, BuildKitError> {
    let mut sender = connect(socket).await?;
    let request = request.map_err(|e| http_error(action)(&e))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| http_error(action)(&e))
}

/// The engine's refusal: its status and message (the `message` of a JSON body).
async fn refusal(
    action: &'static str,
    response: hyper::Response<hyper::body::Incoming>,
) -> BuildKitError {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    BuildKitError::Http {
        action,
        message: format!("{status}: {message}"),
    }
}

/// The secrets one build may read by id: `RUN --mount=type=secret,id=ID`.
#[derive(Clone, Default)]
pub struct SecretStore(Arc<HashMap<String, Vec<u8>>>);

impl SecretStore {
    pub fn new(secrets: HashMap<String, Vec<u8>>) -> Self {
        SecretStore(Arc::new(secrets))
    }
}

impl std::fmt::Debug for SecretStore {
    /// Ids only: a value never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.0.keys().collect();
        ids.sort();
        f.debug_tuple("SecretStore").field(&ids).finish()
    }
}

#[tonic::async_trait]
impl Secrets for SecretStore {
    async fn get_secret(
        &self,
        request: tonic::Request<GetSecretRequest>,
    ) -> Result<tonic::Response<GetSecretResponse>, tonic::Status> {
        let id = &request.get_ref().id;
        match self.0.get(id) {
            Some(data) => Ok(tonic::Response::new(GetSecretResponse {
                data: data.clone(),
            })),
            None => Err(tonic::Status::not_found(format!(
                "secret {id} not found: the job's build_secrets do not name it"
            ))),
        }
    }
}

#[derive(Clone, Copy)]
struct Serving;

#[tonic::async_trait]
impl Health for Serving {
    async fn check(
        &self,
        _request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    async fn list(
        &self,
        _request: tonic::Request<HealthListRequest>,
    ) -> Result<tonic::Response<HealthListResponse>, tonic::Status> {
        Ok(tonic::Response::new(HealthListResponse::default()))
    }

    type WatchStream = futures_util::stream::Pending<Result<HealthCheckResponse, tonic::Status>>;

    async fn watch(
        &self,
        _request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("watch"))
    }
}

/// A build session open on the engine; dropping it closes it.
pub struct Session {
    pub id: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// Opens a session on the engine serving `secrets`; it is registered before this returns,
    /// so a build naming its id finds it.
    pub async fn open(
        socket: &std::path::Path,
        api_version: &str,
        secrets: SecretStore,
    ) -> Result<Session, BuildKitError> {
        let id = session_id();
        const ACTION: &str = "open a build session";
        let request = hyper::Request::post(format!("/v{api_version}/session"))
            .header("Host", "docker")
            .header("Connection", "Upgrade")
            .header("Upgrade", "h2c")
            .header("X-Docker-Expose-Session-Uuid", &id)
            .header("X-Docker-Expose-Session-Name", "janitord")
            .header("X-Docker-Expose-Session-Sharedkey", "")
            .header("X-Docker-Expose-Session-Grpc-Method", HEALTH_CHECK)
            .header("X-Docker-Expose-Session-Grpc-Method", GET_SECRET)
            .body(Full::new(Bytes::new()));
        let response = send(socket, ACTION, request).await?;
        if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            return Err(refusal(ACTION, response).await);
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| http_error(ACTION)(&e))?;
        let routes = tonic::service::Routes::new(HealthServer::new(Serving))
            .add_service(SecretsServer::new(secrets));
        let service = hyper_util::service::TowerToHyperService::new(routes);
        let task = tokio::spawn(async move {
            let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(upgraded, service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "build session ended");
            }
        });
        Ok(Session { id, task })
    }
}

fn session_id() -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    (0..25)
        .map(|_| {
            let n: u8 = rng.random_range(0..36);
            char::from_digit(u32::from(n), 36).unwrap_or('0')
        })
        .collect()
}

/// What `/build` is asked for.
#[derive(Debug, Clone, Default)]
pub struct BuildQuery {
    pub dockerfile: String,
    pub tag: String,
    pub target: Option<String>,
    pub build_args: Vec<(String, String)>,
    pub labels: HashMap<String, String>,
    pub session: String,
}

impl BuildQuery {
    fn to_query(&self) -> String {
        let map = |pairs: &mut dyn Iterator<Item = (&String, &String)>| {
            let m: serde_json::Map<String, serde_json::Value> = pairs
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            serde_json::Value::Object(m).to_string()
        };
        let mut params = vec![
            ("version", "2".to_string()),
            ("session", self.session.clone()),
            ("dockerfile", self.dockerfile.clone()),
            ("t", self.tag.clone()),
            ("rm", "1".to_string()),
            ("labels", map(&mut self.labels.iter())),
            (
                "buildargs",
                map(&mut self.build_args.iter().map(|(k, v)| (k, v))),
            ),
        ];
        if let Some(target) = &self.target {
            params.push(("target", target.clone()));
        }
        params
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One message of the `/build` stream.
#[derive(Debug)]
pub enum BuildEvent {
    Status(StatusResponse),
    ImageId(String),
    Error(String),
    /// Any other text the engine sends.
    Text(String),
}

/// Reads one line of the `/build` stream.
pub fn parse_event(line: &[u8]) -> Option<BuildEvent> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Some(BuildEvent::Error(err.to_string()));
    }
    match v.get("id").and_then(|i| i.as_str()) {
        Some("moby.buildkit.trace") => {
            let raw = v.get("aux")?.as_str()?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
            StatusResponse::decode(bytes.as_slice())
                .ok()
                .map(BuildEvent::Status)
        }
        Some("moby.image.id") => v
            .get("aux")
            .and_then(|a| a.get("ID"))
            .and_then(|i| i.as_str())
            .map(|i| BuildEvent::ImageId(i.to_string())),
        _ => v
            .get("stream")
            .and_then(|s| s.as_str())
            .map(|s| BuildEvent::Text(s.to_string())),
    }
}

/// Starts `/build` on a fresh connection; the response's body is the event stream.
pub async fn start_build(
    socket: &std::path::Path,
    api_version: &str,
    query: &BuildQuery,
    context: Vec<u8>,
) -> Result<hyper::body::Incoming, BuildKitError> {
    let request = hyper::Request::post(format!("/v{api_version}/build?{}", query.to_query()))
        .header("Host", "docker")
        .header("Content-Type", "application/x-tar")
        .body(Full::new(Bytes::from(context)));
    let response = send(socket, "build", request).await?;
    if !response.status().is_success() {
        return Err(refusal("build", response).await);
    }
    Ok(response.into_body())
}

#[derive(Debug, Default)]
struct VertexState {
    number: usize,
    name: String,
    started: bool,
    done: bool,
    log: Vec<u8>,
}

/// Turns BuildKit's status stream into plain progress lines (`#3 [2/4] RUN …`, `#3 0.41 …`,
/// `#3 CACHED`, `#3 DONE 1.2s`) and counts the Dockerfile's steps and cache hits.
#[derive(Debug, Default)]
pub struct Progress {
    vertices: HashMap<String, VertexState>,
    /// Dockerfile steps seen (`[stage n/m] …`), each counted once.
    pub steps: u32,
    pub cache_hits: u32,
    /// The first failing vertex's name and error.
    pub failed_vertex: Option<(String, String)>,
}

impl Progress {
    /// Takes one status message: new vertices are announced, then the logs, then what ended.
    pub fn apply(&mut self, status: &StatusResponse, out: &mut dyn FnMut(&str)) {
        for v in &status.vertexes {
            let next = self.vertices.len() + 1;
            let state = self
                .vertices
                .entry(v.digest.clone())
                .or_insert_with(|| VertexState {
                    number: next,
                    ..VertexState::default()
                });
            if state.name.is_empty() && !v.name.is_empty() {
                state.name = v.name.clone();
                if is_step(&v.name) {
                    self.steps += 1;
                }
            }
            if !state.started && (v.started.is_some() || v.cached) {
                state.started = true;
                out(&format!("#{} {}", state.number, state.name));
            }
        }
        for log in &status.logs {
            let Some(state) = self.vertices.get_mut(&log.vertex) else {
                continue;
            };
            state.log.extend_from_slice(&log.msg);
            while let Some(pos) = state.log.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = state.log.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                out(&format!(
                    "#{} {}",
                    state.number,
                    text.trim_end_matches('\r')
                ));
            }
        }
        for v in &status.vertexes {
            let Some(state) = self.vertices.get_mut(&v.digest) else {
                continue;
            };
            if state.done {
                continue;
            }
            if v.cached {
                state.done = true;
                if is_step(&state.name) {
                    self.cache_hits += 1;
                }
                out(&format!("#{} CACHED", state.number));
            } else if v.completed.is_some() {
                state.done = true;
                flush_log(state, out);
                if v.error.is_empty() {
                    let secs = match (&v.started, &v.completed) {
                        (Some(s), Some(c)) => {
                            (c.seconds - s.seconds) as f64 + f64::from(c.nanos - s.nanos) / 1e9
                        }
                        _ => 0.0,
                    };
                    out(&format!("#{} DONE {secs:.1}s", state.number));
                } else {
                    out(&format!("#{} ERROR: {}", state.number, v.error));
                    if self.failed_vertex.is_none() {
                        self.failed_vertex = Some((state.name.clone(), v.error.clone()));
                    }
                }
            }
        }
    }
}

fn flush_log(state: &mut VertexState, out: &mut dyn FnMut(&str)) {
    if !state.log.is_empty() {
        let text = String::from_utf8_lossy(&state.log).into_owned();
        state.log.clear();
        out(&format!(
            "#{} {}",
            state.number,
            text.trim_end_matches('\r')
        ));
    }
}

/// A Dockerfile instruction's vertex that the layer cache can answer (`[2/4] RUN …`,
/// `[builder 3/3] COPY …`): not the base image (`[1/4] FROM …`, resolved afresh each build)
/// nor BuildKit's own (`[internal] load …`, `exporting to image`).
fn is_step(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('[') else {
        return false;
    };
    let Some((_, instruction)) = rest.split_once("] ") else {
        return false;
    };
    !name.starts_with("[internal]") && !instruction.starts_with("FROM ")
}

/// The first heredoc (`RUN <<EOT`, `COPY <<-EOF dest`) in a Dockerfile: its line number and text.
pub fn first_heredoc(dockerfile: &str) -> Option<(usize, String)> {
    dockerfile.lines().enumerate().find_map(|(i, line)| {
        let trimmed = line.trim_start();
        let word = trimmed.split_whitespace().next()?.to_ascii_uppercase();
        if !matches!(word.as_str(), "RUN" | "COPY" | "ADD") {
            return None;
        }
        let rest = &trimmed[word.len()..];
        let at = rest.find("<<")?;
        let tag = rest[at + 2..]
            .trim_start_matches('-')
            .trim_start_matches(['"', '\'']);
        tag.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            .then(|| (i + 1, line.trim().to_string()))
    })
}

/// Whether the Dockerfile picks its own frontend (`# syntax=…` before the first instruction).
pub fn has_syntax_directive(dockerfile: &str) -> bool {
    dockerfile
        .lines()
        .map(str::trim)
        .take_while(|l| l.starts_with('#') || l.is_empty())
        .any(|l| {
            l.trim_start_matches('#')
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("syntax=")
        })
}

/// The engine's major version, from its version string (`20.10.24`, `27.3.1`).
pub fn engine_major(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

/// The first engine release whose built-in Dockerfile frontend (1.4 and later) takes heredocs.
pub const HEREDOC_ENGINE_MAJOR: u32 = 23;

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_buildkit_proto::moby::buildkit::v1::{Vertex, VertexLog};

    fn vertex(digest: &str, name: &str, cached: bool, done: bool, error: &str) -> Vertex {
        let ts = bollard_buildkit_proto::google::protobuf::Timestamp {
            seconds: 10,
            nanos: 0,
        };
        Vertex {
            digest: digest.into(),
            name: name.into(),
            cached,
            started: Some(ts),
            completed: done.then_some(bollard_buildkit_proto::google::protobuf::Timestamp {
                seconds: 11,
                nanos: 500_000_000,
            }),
            error: error.into(),
            ..Vertex::default()
        }
    }

    #[test]
    fn progress_prints_plain_lines_and_counts_cached_steps() {
        let mut p = Progress::default();
        let mut lines = Vec::new();
        let mut out = |l: &str| lines.push(l.to_string());
        p.apply(
            &StatusResponse {
                vertexes: vec![
                    vertex(
                        "a",
                        "[internal] load build definition from Dockerfile",
                        false,
                        true,
                        "",
                    ),
                    vertex("b", "[1/3] FROM janitor-base", true, false, ""),
                    vertex("c", "[2/3] RUN pip install x", false, false, ""),
                ],
                logs: vec![VertexLog {
                    vertex: "c".into(),
                    msg: b"Collecting x\nInstal".to_vec(),
                    ..VertexLog::default()
                }],
                ..StatusResponse::default()
            },
            &mut out,
        );
        p.apply(
            &StatusResponse {
                vertexes: vec![
                    vertex("c", "[2/3] RUN pip install x", false, true, ""),
                    vertex("d", "[3/3] RUN exit 3", false, true, "exit code: 3"),
                ],
                logs: vec![VertexLog {
                    vertex: "c".into(),
                    msg: b"led x\n".to_vec(),
                    ..VertexLog::default()
                }],
                ..StatusResponse::default()
            },
            &mut out,
        );
        assert_eq!(
            lines,
            [
                "#1 [internal] load build definition from Dockerfile",
                "#2 [1/3] FROM janitor-base",
                "#3 [2/3] RUN pip install x",
                "#3 Collecting x",
                "#1 DONE 1.5s",
                "#2 CACHED",
                "#4 [3/3] RUN exit 3",
                "#3 Installed x",
                "#3 DONE 1.5s",
                "#4 ERROR: exit code: 3",
            ]
        );
        // The FROM is no step: the base is resolved afresh each build.
        assert_eq!((p.steps, p.cache_hits), (2, 0));
        assert_eq!(
            p.failed_vertex,
            Some(("[3/3] RUN exit 3".into(), "exit code: 3".into()))
        );
    }

    #[test]
    fn events_are_read_from_the_build_stream() {
        let status = StatusResponse {
            vertexes: vec![vertex("a", "[1/1] FROM x", true, false, "")],
            ..StatusResponse::default()
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(status.encode_to_vec());
        let line = format!(r#"{{"id":"moby.buildkit.trace","aux":"{b64}"}}"#);
        assert!(matches!(parse_event(line.as_bytes()), Some(BuildEvent::Status(s)) if s == status));
        assert!(matches!(
            parse_event(br#"{"id":"moby.image.id","aux":{"ID":"sha256:ab"}}"#),
            Some(BuildEvent::ImageId(i)) if i == "sha256:ab"
        ));
        assert!(matches!(
            parse_event(br#"{"errorDetail":{"message":"boom"},"error":"boom"}"#),
            Some(BuildEvent::Error(e)) if e == "boom"
        ));
        assert!(parse_event(b"not json").is_none());
    }

    #[test]
    fn heredocs_and_syntax_directives_are_found() {
        let df = "FROM x\nRUN echo hi\nRUN <<EOT\nset -e\nEOT\n";
        assert_eq!(first_heredoc(df), Some((3, "RUN <<EOT".into())));
        assert_eq!(
            first_heredoc("FROM x\ncopy <<-\"EOF\" /a\nhi\nEOF\n"),
            Some((2, "copy <<-\"EOF\" /a".into()))
        );
        assert_eq!(first_heredoc("FROM x\nRUN echo $((1 << 2))\n"), None);
        assert_eq!(first_heredoc("FROM x\nRUN cat <<< hi\n"), None);
        assert!(has_syntax_directive(
            "# syntax=docker/dockerfile:1.7\nFROM x\n"
        ));
        assert!(!has_syntax_directive(
            "FROM x\n# syntax=docker/dockerfile:1.7\n"
        ));
        assert_eq!(engine_major("20.10.24"), Some(20));
        assert_eq!(engine_major("27.3.1"), Some(27));
    }

    #[test]
    fn query_is_encoded() {
        let q = BuildQuery {
            dockerfile: "docker/Dockerfile".into(),
            tag: "janitor/a/b:latest".into(),
            target: Some("runtime".into()),
            build_args: vec![("A".into(), "1 2".into())],
            labels: HashMap::from([("janitor.repo".into(), "a/b".into())]),
            session: "s1".into(),
        };
        let s = q.to_query();
        assert!(
            s.starts_with(
                "version=2&session=s1&dockerfile=docker%2FDockerfile&t=janitor%2Fa%2Fb%3Alatest"
            ),
            "{s}"
        );
        assert!(s.contains("buildargs=%7B%22A%22%3A%221%202%22%7D"), "{s}");
        assert!(s.ends_with("&target=runtime"), "{s}");
    }

    #[test]
    fn secret_values_never_reach_debug_output() {
        let s = SecretStore::new(HashMap::from([("HF_TOKEN".into(), b"hf_secret".to_vec())]));
        let shown = format!("{s:?}");
        assert!(
            shown.contains("HF_TOKEN") && !shown.contains("hf_secret"),
            "{shown}"
        );
    }
}
