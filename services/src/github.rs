//! GitHub's REST API, as narrow as its users need: a head branch's open pull request, creating
//! one, and updating its body (publishing a fix); an organisation's repositories, every page by
//! the `Link` header, and a repository's file tree (organisation runs). 5xx answers and rate
//! limits (429, and 403 with a secondary rate limit) are retried with backoff, honouring
//! `Retry-After`; a primary rate limit used up (`X-RateLimit-Remaining: 0`) is waited out when
//! it resets within a minute, else said with its reset time.

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

/// One repository of an organisation's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRepo {
    pub name: String,
    pub archived: bool,
    pub fork: bool,
    pub default_branch: String,
}

/// An answer: its status, JSON body and the `Link` header's `next` page (as a path).
struct Answer {
    status: u16,
    json: serde_json::Value,
    next: Option<String>,
}

/// The `next` URL of a `Link` header (`<https://…?page=2>; rel="next", <…>; rel="last"`).
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

/// A primary rate limit used up: when it resets (Unix seconds), said in words.
fn rate_limit_words(limit: Option<&str>, reset: u64, now: u64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(i64::try_from(reset).unwrap_or(0))
        .map(|t| format!("{:02}:{:02}:{:02} UTC", t.hour(), t.minute(), t.second()))
        .unwrap_or_else(|_| reset.to_string());
    let minutes = reset.saturating_sub(now).div_ceil(60);
    let limit = limit.map_or(String::new(), |l| format!(" ({l} requests an hour)"));
    format!(
        "GitHub's API rate limit{limit} is used up; it resets at {at} (in {minutes} min): set GITHUB_TOKEN to a token (5,000 requests an hour), or run again after the reset"
    )
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
        let a = self.call_full(method, path, body).await?;
        Ok((a.status, a.json))
    }

    /// [`GitHub::call`] with the answer's `Link` header. `path` may be a whole URL of this API
    /// (a `next` link).
    async fn call_full(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, ServiceError> {
        let path = path.strip_prefix(&self.api).unwrap_or(path);
        let url = format!("{}{path}", self.api);
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut attempt = 1;
        loop {
            let mut request = hyper::Request::builder().method(method.clone()).uri(&url);
            // No token: GitHub's anonymous limit (60 requests an hour), for public reads.
            if !self.token.is_empty() {
                request = request.header("Authorization", format!("Bearer {}", self.token));
            }
            let request = request
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
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let retry_after = header("retry-after")
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let limits = RateHeaders {
                    remaining: header("x-ratelimit-remaining"),
                    reset: header("x-ratelimit-reset").and_then(|v| v.parse().ok()),
                    limit: header("x-ratelimit-limit"),
                    link: header("link"),
                };
                let body = http_body_util::Limited::new(response.into_body(), GITHUB_BODY_LIMIT)
                    .collect()
                    .await
                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                    .unwrap_or_default();
                Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, body, limits))
            })
            .await;
            let (status, mut retry_after, text, limits) = match answer {
                Err(_) => (
                    0,
                    None,
                    format!("no answer within {} s", GITHUB_CALL_LIMIT.as_secs()),
                    RateHeaders::default(),
                ),
                Ok(Err(e)) => (0, None, e.to_string(), RateHeaders::default()),
                Ok(Ok(answered)) => answered,
            };
            let limited = status == 429
                || (status == 403 && text.to_ascii_lowercase().contains("rate limit"));
            // The primary limit used up: wait for its reset when it is near, else say when.
            if limited && limits.remaining.as_deref() == Some("0") {
                if let Some(reset) = limits.reset {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
                    let wait = Duration::from_secs(reset.saturating_sub(now) + 1);
                    if wait > MAX_RETRY_AFTER || attempt >= GITHUB_ATTEMPTS {
                        return Err(error(
                            &url,
                            ErrorKind::Throttled,
                            format!(
                                "{method} {path}: {}",
                                rate_limit_words(limits.limit.as_deref(), reset, now)
                            ),
                        ));
                    }
                    retry_after = Some(wait);
                }
            }
            let retry = status == 0 || status >= 500 || limited;
            if !retry {
                let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
                return if (200..300).contains(&status) {
                    Ok(Answer {
                        status,
                        json,
                        next: limits.link.as_deref().and_then(next_link),
                    })
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
                .map(|d| d.min(MAX_RETRY_AFTER + Duration::from_secs(1)))
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

impl GitHub {
    /// Posts a commit status on `sha` (`POST /repos/{owner}/{repo}/statuses/{sha}`).
    pub async fn create_status(
        &self,
        owner: &str,
        repo: &str,
        sha: &str,
        fields: &serde_json::Value,
    ) -> Result<(), ServiceError> {
        let path = format!("/repos/{owner}/{repo}/statuses/{sha}");
        self.call(hyper::Method::POST, &path, Some(fields)).await?;
        Ok(())
    }

    /// The statuses already on `sha`, newest first (one page of 100).
    pub async fn commit_statuses(
        &self,
        owner: &str,
        repo: &str,
        sha: &str,
    ) -> Result<Vec<serde_json::Value>, ServiceError> {
        let path = format!("/repos/{owner}/{repo}/commits/{sha}/statuses?per_page=100");
        let (_, list) = self.call(hyper::Method::GET, &path, None).await?;
        Ok(list.as_array().cloned().unwrap_or_default())
    }
}

/// The rate-limit and paging headers of an answer.
#[derive(Default)]
struct RateHeaders {
    remaining: Option<String>,
    reset: Option<u64>,
    limit: Option<String>,
    link: Option<String>,
}

/// The most pages of an organisation's repositories read (100 each).
const MAX_PAGES: usize = 100;

impl GitHub {
    /// Every repository of `org`, page by page along the `Link` header.
    pub async fn org_repos(&self, org: &str) -> Result<Vec<OrgRepo>, ServiceError> {
        let mut out = Vec::new();
        let mut next = Some(format!("/orgs/{org}/repos?type=all&per_page=100"));
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(error(
                    &path,
                    ErrorKind::Rejected,
                    format!("more than {MAX_PAGES} pages of repositories; narrow the run with --include"),
                ));
            }
            let a = self.call_full(hyper::Method::GET, &path, None).await?;
            let Some(items) = a.json.as_array() else {
                return Err(error(
                    &path,
                    ErrorKind::Rejected,
                    "the answer is not a list of repositories",
                ));
            };
            for r in items {
                let Some(name) = r.get("name").and_then(|n| n.as_str()) else {
                    continue;
                };
                out.push(OrgRepo {
                    name: name.to_string(),
                    archived: r.get("archived").and_then(serde_json::Value::as_bool) == Some(true),
                    fork: r.get("fork").and_then(serde_json::Value::as_bool) == Some(true),
                    default_branch: r
                        .get("default_branch")
                        .and_then(|b| b.as_str())
                        .unwrap_or("main")
                        .to_string(),
                });
            }
            next = a.next;
        }
        Ok(out)
    }

    /// The paths of the files in `branch` of `owner/repo` (one recursive tree call).
    /// `Ok(None)`: the repository is empty (GitHub's 409).
    pub async fn tree_paths(
        &self,
        owner: &str,
        repo: &str,
        branch: &str,
    ) -> Result<Option<Vec<String>>, ServiceError> {
        let path = format!("/repos/{owner}/{repo}/git/trees/{branch}?recursive=1");
        let a = match self.call_full(hyper::Method::GET, &path, None).await {
            Ok(a) => a,
            Err(e) if e.message.contains("HTTP 409") => return Ok(None),
            Err(e) => return Err(e),
        };
        let paths = a
            .json
            .get("tree")
            .and_then(|t| t.as_array())
            .map(|t| {
                t.iter()
                    .filter(|e| e.get("type").and_then(|t| t.as_str()) == Some("blob"))
                    .filter_map(|e| e.get("path").and_then(|p| p.as_str()))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(paths))
    }
}

impl GitHub {
    /// The text of one file of `owner/repo` at `git_ref` (the default branch when `None`),
    /// through the contents API. `Ok(None)`: no such file.
    pub async fn file_text(
        &self,
        owner: &str,
        repo: &str,
        path: &str,
        git_ref: Option<&str>,
    ) -> Result<Option<String>, ServiceError> {
        let mut call = format!("/repos/{owner}/{repo}/contents/{path}");
        if let Some(r) = git_ref {
            call.push_str(&format!("?ref={r}"));
        }
        let a = match self.call_full(hyper::Method::GET, &call, None).await {
            Ok(a) => a,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(encoded) = a.json.get("content").and_then(|c| c.as_str()) else {
            return Err(error(
                &call,
                ErrorKind::Rejected,
                format!(
                    "GET {call}: the answer has no `content` (a directory, or a file over 1 MB)"
                ),
            ));
        };
        use base64::Engine as _;
        let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| {
                error(
                    &call,
                    ErrorKind::Rejected,
                    format!("GET {call}: content is not base64: {e}"),
                )
            })?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }
}

fn pull(v: &serde_json::Value) -> Option<PullRequest> {
    Some(PullRequest {
        number: v.get("number")?.as_u64()?,
        html_url: v.get("html_url")?.as_str()?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_comes_from_the_link_header() {
        let link = r#"<https://api.github.com/organizations/1/repos?page=2>; rel="next", <https://api.github.com/organizations/1/repos?page=3>; rel="last""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://api.github.com/organizations/1/repos?page=2")
        );
        let last = r#"<https://api.github.com/x?page=1>; rel="prev", <https://api.github.com/x?page=1>; rel="first""#;
        assert_eq!(next_link(last), None);
    }

    #[test]
    fn a_used_up_rate_limit_says_when_it_resets() {
        // 2026-12-03 23:50:00 UTC, 25 minutes ahead.
        let reset = 1_796_341_800;
        let words = rate_limit_words(Some("60"), reset, reset - 25 * 60 + 10);
        assert_eq!(
            words,
            "GitHub's API rate limit (60 requests an hour) is used up; it resets at 23:50:00 UTC (in 25 min): set GITHUB_TOKEN to a token (5,000 requests an hour), or run again after the reset"
        );
    }
}
