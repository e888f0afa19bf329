//! Raw sockets for the tests that a well-behaved HTTP client or server cannot play: clients that
//! send malformed or slow requests or never read, and upstreams that answer with exactly the bytes
//! a test scripts (a cut mid-event, an early 413, a huge `Retry-After`). Loopback only; every
//! read is bounded in time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connect to `addr` and send `bytes`.
pub async fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("send");
    s
}

/// Read until the end of a response (or request) head, at most `limit`; `None` if it did not
/// come (closed or timed out). The head is returned lower-cased, body bytes read past it are
/// returned too.
pub async fn read_head(s: &mut TcpStream, limit: Duration) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let until = tokio::time::Instant::now() + limit;
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).to_lowercase();
            return Some((head, buf[i + 4..].to_vec()));
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(until, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Read until the peer closes, at most `limit`; returns what came and whether it closed.
pub async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    let until = tokio::time::Instant::now() + limit;
    loop {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(until, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (buf, true),
            Err(_) => return (buf, false),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The value of header `name` (lower-case) in a lower-cased head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

/// What a scripted upstream does with one request.
#[derive(Clone, Debug)]
pub enum Step {
    /// Read the request body (by its `content-length`) before going on.
    ReadBody,
    Write(Vec<u8>),
    Sleep(Duration),
    /// Close the connection (with an RST if request bytes are still unread).
    Close,
}

/// An HTTP/1.1 upstream that answers every request with the steps its script returns for the
/// request head (lower-cased). Counts the requests it got. It reads one request per connection:
/// scripts answer with `connection: close` (or close), so that the connection is not reused.
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    /// The head of the last request.
    pub last_head: Arc<std::sync::Mutex<String>>,
}

impl Upstream {
    pub async fn start(script: impl Fn(&str) -> Vec<Step> + Send + Sync + 'static) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let last_head = Arc::new(std::sync::Mutex::new(String::new()));
        let script = Arc::new(script);
        let (n, last) = (requests.clone(), last_head.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let (script, n, last) = (script.clone(), n.clone(), last.clone());
                tokio::spawn(async move {
                    // One request per connection is enough for these tests.
                    let Some((head, mut body)) = read_head(&mut s, Duration::from_secs(30)).await
                    else {
                        return;
                    };
                    n.fetch_add(1, Ordering::SeqCst);
                    *last.lock().unwrap() = head.clone();
                    let len: usize = header(&head, "content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    for step in script(&head) {
                        match step {
                            Step::ReadBody => {
                                while body.len() < len {
                                    let mut c = vec![0u8; 65536];
                                    match tokio::time::timeout(
                                        Duration::from_secs(30),
                                        s.read(&mut c),
                                    )
                                    .await
                                    {
                                        Ok(Ok(k)) if k > 0 => body.extend_from_slice(&c[..k]),
                                        _ => return,
                                    }
                                }
                            }
                            Step::Write(b) => {
                                if s.write_all(&b).await.is_err() {
                                    return;
                                }
                            }
                            Step::Sleep(d) => tokio::time::sleep(d).await,
                            Step::Close => return,
                        }
                    }
                    // Keep the connection until the other side closes it.
                    let _ = read_to_close(&mut s, Duration::from_secs(30)).await;
                });
            }
        });
        Upstream {
            addr,
            requests,
            last_head,
        }
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// An HTTP/1.1 response with `headers` (each `name: value`) and a `content-length` body.
pub fn response(status: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// One chunk of a chunked body.
pub fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

/// The events of an SSE body: (event type, data), in order; an unterminated tail is dropped, as
/// an SSE client does.
pub fn sse_events(body: &str) -> Vec<(String, String)> {
    let body = body.replace("\r\n", "\n");
    let mut out = Vec::new();
    let mut parts: Vec<&str> = body.split("\n\n").collect();
    parts.pop(); // the part after the last blank line is not a finished event
    for block in parts {
        let mut kind = "message".to_string();
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                kind = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !data.is_empty() || kind != "message" {
            out.push((kind, data.join("\n")));
        }
    }
    out
}

/// Decode a chunked body (as much of it as is whole).
pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = find(b, b"\r\n") {
        let Ok(n) = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16) else {
            break;
        };
        if n == 0 || b.len() < i + 2 + n {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[(i + 4 + n).min(b.len())..];
    }
    out
}
