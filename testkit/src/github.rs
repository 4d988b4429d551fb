//! A stand-in for the GitHub endpoints janitor uses, on loopback: a head's open pull requests,
//! creating and updating one (publishing), an organisation's repositories in pages with `Link`
//! headers, a repository's tree and its files' contents (organisation runs and routing). It records every request, so tests
//! assert on the body, the auth header and idempotency, and it fails the next calls on cue,
//! with the headers a rate limit carries.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request as the fixture saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: String,
    pub body: serde_json::Value,
}

/// A repository of the fixture's organisation.
#[derive(Debug, Clone, Default)]
pub struct OrgRepo {
    pub name: String,
    pub archived: bool,
    pub fork: bool,
    /// Its files' paths; `None`: an empty repository (GitHub answers its tree with 409).
    pub files: Option<Vec<String>>,
    /// The contents of some of its files (path, text), served by the contents API.
    pub texts: Vec<(String, String)>,
}

/// An answer with its extra headers (also one given on cue instead of the real one).
type Failure = (u16, Vec<(String, String)>, serde_json::Value);

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    /// (number, head branch, body)
    pulls: Vec<(u64, String, String)>,
    /// What the next requests get instead of an answer.
    failures: Vec<Failure>,
    /// The organisation's repositories, and how many a page holds.
    org: Vec<OrgRepo>,
    page_size: usize,
    /// Commit statuses posted: (commit, the status as sent).
    statuses: Vec<(String, serde_json::Value)>,
}

/// The running fixture.
#[derive(Clone)]
pub struct GitHubFixture {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl GitHubFixture {
    pub async fn start() -> GitHubFixture {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state: Arc<Mutex<State>> = Arc::default();
        let served = state.clone();
        let base = url.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let state = served.clone();
                let base = base.clone();
                tokio::spawn(async move {
                    let Some((head, body)) = read_request(&mut socket).await else {
                        return;
                    };
                    let (status, headers, answer) = answer(&state, &head, &body, &base);
                    let text = answer.to_string();
                    let extra: String = headers
                        .iter()
                        .map(|(k, v)| format!("{k}: {v}\r\n"))
                        .collect();
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        GitHubFixture { url, state }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The next requests are answered with these statuses, in order.
    pub fn fail_next(&self, statuses: &[u16]) {
        let mut s = self.state.lock().unwrap();
        for status in statuses {
            s.failures.push((
                *status,
                Vec::new(),
                serde_json::json!({"message": "failing on cue"}),
            ));
        }
    }

    /// The next request is answered as GitHub does when the primary rate limit is used up:
    /// 403, `X-RateLimit-Remaining: 0` and the reset at `reset` (Unix seconds).
    pub fn rate_limit_next(&self, reset: u64) {
        self.state.lock().unwrap().failures.push((
            403,
            vec![
                ("X-RateLimit-Limit".into(), "60".into()),
                ("X-RateLimit-Remaining".into(), "0".into()),
                ("X-RateLimit-Reset".into(), reset.to_string()),
            ],
            serde_json::json!({"message": "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit.)"}),
        ));
    }

    /// The organisation `GET /orgs/{org}/repos` lists, `page_size` a page.
    pub fn set_org(&self, repos: Vec<OrgRepo>, page_size: usize) {
        let mut s = self.state.lock().unwrap();
        s.org = repos;
        s.page_size = page_size.max(1);
    }
}

/// The request's `Authorization` header, or empty.
fn authorization(head: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

pub(crate) async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            let mut body = buf[end + 4..].to_vec();
            while body.len() < length {
                let n = socket.read(&mut chunk).await.ok()?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            return Some((head, body));
        }
    }
}

fn answer(state: &Mutex<State>, head: &str, body: &[u8], base: &str) -> Failure {
    let (status, json) = match org_answer(state, head, base) {
        Some(answered) => return answered,
        None => match statuses_answer(state, head, body) {
            Some(answered) => answered,
            None => pulls_answer(state, head, body),
        },
    };
    (status, Vec::new(), json)
}

/// The organisation's listing and trees; `None` for any other request.
fn org_answer(state: &Mutex<State>, head: &str, base: &str) -> Option<Failure> {
    let first = head.lines().next().unwrap_or("");
    let path = first.split_whitespace().nth(1).unwrap_or("");
    let is_org = path.starts_with("/orgs/");
    let is_tree = path.contains("/git/trees/");
    let is_contents = path.starts_with("/repos/") && path.contains("/contents/");
    if !is_org && !is_tree && !is_contents {
        return None;
    }
    let mut s = state.lock().unwrap();
    s.seen.push(Seen {
        method: "GET".into(),
        path: path.to_string(),
        authorization: authorization(head),
        body: serde_json::Value::Null,
    });
    if !s.failures.is_empty() {
        let (status, headers, json) = s.failures.remove(0);
        return Some((status, headers, json));
    }
    if is_org {
        let page: usize = ["&page=", "?page="]
            .iter()
            .find_map(|k| path.split(k).nth(1))
            .and_then(|rest| rest.split('&').next()?.parse().ok())
            .unwrap_or(1)
            .max(1);
        let size = s.page_size.max(1);
        let items: Vec<serde_json::Value> = s
            .org
            .iter()
            .skip((page - 1) * size)
            .take(size)
            .map(|r| {
                serde_json::json!({"name": r.name, "archived": r.archived, "fork": r.fork,
                                   "default_branch": "main", "private": false})
            })
            .collect();
        let mut headers = Vec::new();
        if page * size < s.org.len() {
            let org = path.split('/').nth(2).unwrap_or("");
            headers.push((
                "Link".to_string(),
                format!(
                    "<{base}/orgs/{org}/repos?type=all&per_page=100&page={}>; rel=\"next\", <{base}/orgs/{org}/repos?page=1>; rel=\"first\"",
                    page + 1
                ),
            ));
        }
        return Some((200, headers, serde_json::Value::Array(items)));
    }
    // /repos/{org}/{name}/contents/{path}?ref={ref}
    if is_contents {
        use base64::Engine as _;
        let name = path.split('/').nth(3).unwrap_or("");
        let file = path
            .split_once("/contents/")
            .map(|(_, f)| f.split('?').next().unwrap_or(f))
            .unwrap_or("");
        let text = s
            .org
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.texts.iter().find(|(p, _)| p == file))
            .map(|(_, t)| t.clone());
        return Some(match text {
            Some(t) => (
                200,
                Vec::new(),
                serde_json::json!({"type": "file", "encoding": "base64", "path": file,
                    "content": base64::engine::general_purpose::STANDARD.encode(t.as_bytes())}),
            ),
            None => (404, Vec::new(), serde_json::json!({"message": "Not Found"})),
        });
    }
    // /repos/{org}/{name}/git/trees/{branch}?recursive=1
    let name = path.split('/').nth(3).unwrap_or("");
    Some(match s.org.iter().find(|r| r.name == name) {
        None => (404, Vec::new(), serde_json::json!({"message": "Not Found"})),
        Some(OrgRepo { files: None, .. }) => (
            409,
            Vec::new(),
            serde_json::json!({"message": "Git Repository is empty."}),
        ),
        Some(OrgRepo {
            files: Some(files), ..
        }) => {
            let tree: Vec<serde_json::Value> = files
                .iter()
                .map(|f| serde_json::json!({"path": f, "type": "blob"}))
                .collect();
            (
                200,
                Vec::new(),
                serde_json::json!({"tree": tree, "truncated": false}),
            )
        }
    })
}

/// `POST /repos/{o}/{r}/statuses/{sha}` and `GET /repos/{o}/{r}/commits/{sha}/statuses`;
/// `None` for any other request.
fn statuses_answer(
    state: &Mutex<State>,
    head: &str,
    body: &[u8],
) -> Option<(u16, serde_json::Value)> {
    let first = head.lines().next().unwrap_or("");
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.split('/').collect();
    // ["", "repos", o, r, "statuses", sha] or ["", "repos", o, r, "commits", sha, "statuses"]
    let sha = match (method, segments.as_slice()) {
        ("POST", ["", "repos", _, _, "statuses", sha]) => *sha,
        ("GET", ["", "repos", _, _, "commits", sha, "statuses"]) => *sha,
        _ => return None,
    };
    let mut s = state.lock().unwrap();
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    s.seen.push(Seen {
        method: method.to_string(),
        path: path.to_string(),
        authorization: authorization(head),
        body: json.clone(),
    });
    if !s.failures.is_empty() {
        let (status, _, answer) = s.failures.remove(0);
        return Some((status, answer));
    }
    if method == "POST" {
        s.statuses.push((sha.to_string(), json.clone()));
        return Some((201, json));
    }
    let list: Vec<serde_json::Value> = s
        .statuses
        .iter()
        .rev()
        .filter(|(c, _)| c == sha)
        .map(|(_, v)| v.clone())
        .collect();
    Some((200, serde_json::Value::Array(list)))
}

impl GitHubFixture {
    /// The commit statuses posted so far: (commit, the status as sent).
    pub fn statuses(&self) -> Vec<(String, serde_json::Value)> {
        self.state.lock().unwrap().statuses.clone()
    }
}

fn pulls_answer(state: &Mutex<State>, head: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut s = state.lock().unwrap();
    let first = head.lines().next().unwrap_or("");
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let authorization = authorization(head);
    let body: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    s.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorization,
        body: body.clone(),
    });
    if !s.failures.is_empty() {
        let (status, _, json) = s.failures.remove(0);
        return (status, json);
    }
    let pr = |n: u64| serde_json::json!({"number": n, "html_url": format!("https://github.example/pull/{n}")});
    match method.as_str() {
        "GET" => {
            let head_ref = path
                .split("head=")
                .nth(1)
                .and_then(|h| h.split('&').next())
                .and_then(|h| h.split_once(':'))
                .map(|(_, b)| b.to_string())
                .unwrap_or_default();
            let open: Vec<serde_json::Value> = s
                .pulls
                .iter()
                .filter(|(_, b, _)| *b == head_ref)
                .map(|(n, _, _)| pr(*n))
                .collect();
            (200, serde_json::Value::Array(open))
        }
        "POST" => {
            let n = s.pulls.len() as u64 + 1;
            let branch = body["head"].as_str().unwrap_or("").to_string();
            let text = body["body"].as_str().unwrap_or("").to_string();
            s.pulls.push((n, branch, text));
            (201, pr(n))
        }
        "PATCH" => {
            let n: u64 = path
                .rsplit('/')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            (200, pr(n))
        }
        _ => (404, serde_json::json!({"message": "Not Found"})),
    }
}
