//! A scripted fake of Anthropic's Messages API on loopback, for the real agent image: each
//! `POST /v1/messages` takes the next turn of the script (a Bash tool call, a final text, or
//! an HTTP error), streamed as server-sent events the way the API streams them, and every
//! request is recorded (its API key and the text it sent).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;

/// One answer of the script.
#[derive(Debug, Clone)]
pub enum Turn {
    /// The model asks to run this command with the Bash tool.
    Bash(String),
    /// The model ends its turn with this text.
    Text(String),
    /// The API answers with this HTTP status (429, 500, 529 …).
    Fail(u16),
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub api_key: String,
    /// Every text of the request's messages and system prompt, joined.
    pub text: String,
    pub model: String,
}

#[derive(Default)]
struct State {
    script: Vec<Turn>,
    calls: Vec<Call>,
}

pub struct ModelApiFixture {
    /// `http://127.0.0.1:PORT`, for `ANTHROPIC_BASE_URL`.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl ModelApiFixture {
    pub async fn start(script: Vec<Turn>) -> ModelApiFixture {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            script,
            calls: Vec::new(),
        }));
        let served = state.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let state = served.clone();
                tokio::spawn(async move {
                    let Some((head, body)) = crate::github::read_request(&mut socket).await else {
                        return;
                    };
                    let reply = answer(&state, &head, &body);
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        ModelApiFixture { url, state }
    }

    /// Every Messages API call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Turns not yet used.
    pub fn left(&self) -> usize {
        self.state.lock().unwrap().script.len()
    }
}

fn header(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn texts(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| texts(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| texts(x, out)),
        _ => {}
    }
}

fn answer(state: &Mutex<State>, head: &str, body: &[u8]) -> String {
    let path = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_string();
    if !path.starts_with("/v1/messages") || path.starts_with("/v1/messages/count_tokens") {
        let text = r#"{"type":"error","error":{"type":"not_found_error","message":"not here"}}"#;
        return format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        );
    }
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let mut text = String::new();
    texts(&request["messages"], &mut text);
    texts(&request["system"], &mut text);
    let model = request["model"]
        .as_str()
        .unwrap_or("claude-test")
        .to_string();
    let mut s = state.lock().unwrap();
    s.calls.push(Call {
        path,
        api_key: header(head, "x-api-key"),
        text,
        model: model.clone(),
    });
    let turn = if s.script.is_empty() {
        Turn::Text("(the script has ended)".into())
    } else {
        s.script.remove(0)
    };
    drop(s);
    let (block, stop) = match turn {
        Turn::Fail(code) => {
            let kind = if code == 429 {
                "rate_limit_error"
            } else {
                "overloaded_error"
            };
            let text = format!(
                r#"{{"type":"error","error":{{"type":"{kind}","message":"failing on cue"}}}}"#
            );
            return format!(
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
        Turn::Bash(command) => (
            serde_json::json!({"type": "tool_use", "id": "toolu_janitor", "name": "Bash",
                "input": {"command": command, "description": "run a command"}}),
            "tool_use",
        ),
        Turn::Text(t) => (serde_json::json!({"type": "text", "text": t}), "end_turn"),
    };
    let usage = serde_json::json!({"input_tokens": 1000, "output_tokens": 100});
    let start = serde_json::json!({"type": "message_start", "message": {
        "id": "msg_janitor", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage}});
    let (open, delta) = if block["type"] == "text" {
        (
            serde_json::json!({"type": "text", "text": ""}),
            serde_json::json!({"type": "text_delta", "text": block["text"]}),
        )
    } else {
        (
            serde_json::json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
            serde_json::json!({"type": "input_json_delta", "partial_json": block["input"].to_string()}),
        )
    };
    let events = [
        ("message_start", start),
        (
            "content_block_start",
            serde_json::json!({"type": "content_block_start", "index": 0, "content_block": open}),
        ),
        (
            "content_block_delta",
            serde_json::json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ),
        (
            "content_block_stop",
            serde_json::json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            serde_json::json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 100}}),
        ),
        ("message_stop", serde_json::json!({"type": "message_stop"})),
    ];
    let stream: String = events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{stream}",
        stream.len()
    )
}
