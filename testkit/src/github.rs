//! A stand-in for the two GitHub endpoints publishing uses (list a head's open pull requests,
//! create one, update one), on loopback. It records every request, so tests assert on the
//! body, the auth header and idempotency, and it fails the next calls on cue.

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

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    /// (number, head branch, body)
    pulls: Vec<(u64, String, String)>,
    /// Statuses the next requests get instead of an answer.
    failures: Vec<u16>,
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
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let state = served.clone();
                tokio::spawn(async move {
                    let Some((head, body)) = read_request(&mut socket).await else {
                        return;
                    };
                    let (status, answer) = answer(&state, &head, &body);
                    let text = answer.to_string();
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
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
        self.state
            .lock()
            .unwrap()
            .failures
            .extend_from_slice(statuses);
    }
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

fn answer(state: &Mutex<State>, head: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut s = state.lock().unwrap();
    let first = head.lines().next().unwrap_or("");
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let authorization = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    s.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorization,
        body: body.clone(),
    });
    if !s.failures.is_empty() {
        let status = s.failures.remove(0);
        return (status, serde_json::json!({"message": "failing on cue"}));
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
