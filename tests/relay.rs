//! The relay of a committed SSE stream through real sockets, against an upstream that writes its
//! bytes exactly where a test wants them cut: an event split across two upstream reads reaches
//! the client whole (it is held back until its end, never dropped).

use crate::common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream that answers every request with an SSE stream written in `parts`, one HTTP chunk
/// each, `pause` apart.
async fn upstream(parts: &'static [&'static str], pause: Duration) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // Read the request header and its (small) body.
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for p in parts {
                    let chunk = format!("{:x}\r\n{p}\r\n", p.len());
                    if s.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = s.flush().await;
                    tokio::time::sleep(pause).await;
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_split_across_upstream_reads_reaches_the_client_whole() {
    const PARTS: &[&str] = &[
        "data: {\"n\":1}\n\n",
        "data: {\"n\":",
        "2}\n\ndata: {\"n\"",
        ":3}\n\ndata: [DONE]\n\n",
    ];
    let addr = upstream(PARTS, Duration::from_millis(100)).await;
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{addr}\" }} ]\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n"
    );
    let lb = Balancer::start(&body).await;
    let r = client()
        .post(lb.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat("x", true))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), r.text())
        .await
        .expect("no hang")
        .expect("clean end");
    assert_eq!(text, PARTS.concat());
}
