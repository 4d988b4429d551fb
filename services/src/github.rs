//! GitHub's REST API, as narrow as publishing a fix needs: a head branch's open pull request,
//! creating one, and updating its body. 5xx answers and rate limits (429, and 403 with a
//! secondary rate limit) are retried with backoff, honouring `Retry-After`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::backoff::Backoff;
use crate::error::{ErrorKind, ServiceError};

/// Attempts per call before it is given up on.
pub const GITHUB_ATTEMPTS: u32 = 5;
/// The longest one request (and its answer) may take.
pub const GITHUB_CALL_LIMIT: Duration = Duration::from_secs(30);
/// The most of an answer read.
const GITHUB_BODY_LIMIT: usize = 4 * 1024 * 1024;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// An open pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub html_url: String,
}

/// A client of one GitHub API (`https://api.github.com`, or a test's).
#[derive(Clone)]
pub struct GitHub {
    api: String,
    token: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for GitHub {
    /// Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub").field("api", &self.api).finish()
    }
}

fn error(target: &str, kind: ErrorKind, message: impl Into<String>) -> ServiceError {
    ServiceError::new("GitHub", "REST", target, kind, message)
}

impl GitHub {
    pub fn new(api: &str, token: &str) -> Result<GitHub, ServiceError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| error(api, ErrorKind::Unavailable, format!("no TLS roots: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(GitHub {
            api: api.trim_end_matches('/').to_string(),
            token: token.to_string(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// One call, retried while a retry can help; returns the status and the JSON body.
    async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), ServiceError> {
        let url = format!("{}{path}", self.api);
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut attempt = 1;
        loop {
            let request = hyper::Request::builder()
                .method(method.clone())
                .uri(&url)
                .header("Authorization", format!("Bearer {}", self.token))
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .header("User-Agent", "janitord")
                .header("Content-Type", "application/json")
                .body(Full::new(Bytes::from(
                    body.map(|b| b.to_string()).unwrap_or_default(),
                )))
                .map_err(|e| error(&url, ErrorKind::Rejected, e.to_string()))?;
            let answer = tokio::time::timeout(GITHUB_CALL_LIMIT, async {
                let response = self.client.request(request).await?;
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = http_body_util::Limited::new(response.into_body(), GITHUB_BODY_LIMIT)
                    .collect()
                    .await
                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                    .unwrap_or_default();
                Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, body))
            })
            .await;
            let (status, retry_after, text) = match answer {
                Err(_) => (
                    0,
                    None,
                    format!("no answer within {} s", GITHUB_CALL_LIMIT.as_secs()),
                ),
                Ok(Err(e)) => (0, None, e.to_string()),
                Ok(Ok(answered)) => answered,
            };
            let limited = status == 429
                || (status == 403 && text.to_ascii_lowercase().contains("rate limit"));
            let retry = status == 0 || status >= 500 || limited;
            if !retry {
                let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
                return if (200..300).contains(&status) {
                    Ok((status, json))
                } else {
                    let message = json
                        .get("message")
                        .and_then(|m| m.as_str())
                        .map_or(text.trim().to_string(), str::to_string);
                    let kind = if status == 404 {
                        ErrorKind::NotFound
                    } else {
                        ErrorKind::Rejected
                    };
                    Err(error(
                        &url,
                        kind,
                        format!("{method} {path}: HTTP {status}: {message}"),
                    ))
                };
            }
            if attempt >= GITHUB_ATTEMPTS {
                let kind = if limited {
                    ErrorKind::Throttled
                } else {
                    ErrorKind::Unavailable
                };
                return Err(error(
                    &url,
                    kind,
                    format!(
                        "{method} {path}: gave up after {attempt} attempts: HTTP {status}: {}",
                        text.trim()
                    ),
                ));
            }
            let wait = retry_after
                .map(|d| d.min(MAX_RETRY_AFTER))
                .unwrap_or_else(|| backoff.next_delay());
            tracing::warn!(%method, path, status, attempt, wait_ms = wait.as_millis() as u64, "GitHub call failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// The open pull request whose head is `owner:branch`, if any.
    pub async fn open_pull(
        &self,
        owner: &str,
        repo: &str,
        branch: &str,
    ) -> Result<Option<PullRequest>, ServiceError> {
        let path = format!("/repos/{owner}/{repo}/pulls?state=open&head={owner}:{branch}");
        let (_, list) = self.call(hyper::Method::GET, &path, None).await?;
        Ok(list.as_array().and_then(|l| l.first()).and_then(pull))
    }

    pub async fn create_pull(
        &self,
        owner: &str,
        repo: &str,
        fields: &serde_json::Value,
    ) -> Result<PullRequest, ServiceError> {
        let path = format!("/repos/{owner}/{repo}/pulls");
        let (_, created) = self.call(hyper::Method::POST, &path, Some(fields)).await?;
        pull(&created).ok_or_else(|| {
            error(
                &path,
                ErrorKind::Rejected,
                "no number or html_url in the answer",
            )
        })
    }

    pub async fn update_pull(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        fields: &serde_json::Value,
    ) -> Result<PullRequest, ServiceError> {
        let path = format!("/repos/{owner}/{repo}/pulls/{number}");
        let (_, updated) = self.call(hyper::Method::PATCH, &path, Some(fields)).await?;
        pull(&updated).ok_or_else(|| {
            error(
                &path,
                ErrorKind::Rejected,
                "no number or html_url in the answer",
            )
        })
    }
}

fn pull(v: &serde_json::Value) -> Option<PullRequest> {
    Some(PullRequest {
        number: v.get("number")?.as_u64()?,
        html_url: v.get("html_url")?.as_str()?.to_string(),
    })
}
