//! A small HTTP/1.1 client for the worker's loopback port (hyper): one connection per request,
//! a bounded answer, and a probe that tells "something answers HTTP" from "a port is open"
//! (Docker's proxy accepts connections before the worker listens).

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The largest answer read (an output may carry a base64 image).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAnswer(pub String);

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Sends one request and reads the whole answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<Answer, NoAnswer> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| NoAnswer(format!("cannot connect to {addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| NoAnswer(format!("HTTP handshake with {addr} failed: {e}")))?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| NoAnswer(format!("bad request: {e}")))?;
    let result = async {
        let res = sender.send_request(req).await.map_err(|e| {
            NoAnswer(format!(
                "the worker closed the connection without an answer: {e}"
            ))
        })?;
        let status = res.status().as_u16();
        let body = Limited::new(res.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                NoAnswer(format!(
                    "the answer could not be read (over {MAX_ANSWER_BYTES} bytes?): {e}"
                ))
            })?
            .to_bytes()
            .to_vec();
        Ok(Answer { status, body })
    }
    .await;
    conn.abort();
    result
}

/// Whether an HTTP server answers at `addr` (any status counts).
pub async fn answers(addr: SocketAddr) -> bool {
    request(addr, "GET", "/ping", Vec::new()).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_an_answer_and_tells_a_silent_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for reply in [true, false] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await.unwrap();
                if reply {
                    s.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 22\r\n\r\n{\"status\":\"COMPLETED\"}",
                    )
                    .await
                    .unwrap();
                }
                // The second connection closes without a word, as Docker's proxy does before
                // the worker listens.
            }
        });
        let a = request(addr, "POST", "/runsync", b"{}".to_vec())
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.body, b"{\"status\":\"COMPLETED\"}");
        assert!(!answers(addr).await);
    }
}
