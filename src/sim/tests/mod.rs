//! Behaviour of the simulated model server, observed through real sockets on loopback.
//!
//! Shared helpers live here; the tests are grouped by what they exercise.

mod answers;
mod chaos;
mod failures;
mod lifecycle;
mod prefix;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

fn fast() -> SimConfig {
    SimConfig {
        ttft: Duration::from_millis(5),
        token_delay: Duration::from_millis(1),
        tokens: 4,
        ..SimConfig::default()
    }
}

async fn start(cfg: SimConfig) -> SimHandle {
    let addr = "127.0.0.1:0".parse().expect("loopback address");
    SimHandle::start(addr, cfg).await.expect("start sim")
}

fn url(sim: &SimHandle, path: &str) -> String {
    format!("http://{}{path}", sim.addr())
}

fn chat(sim: &SimHandle, client: &reqwest::Client, body: &Value) -> reqwest::RequestBuilder {
    client
        .post(url(sim, "/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string())
}

fn hello(stream: bool) -> Value {
    json!({"model": "m1", "stream": stream, "messages": [{"role": "user", "content": "hello there world"}]})
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Finished,
    Aborted,
    Stalled,
}

/// Reads an SSE body, timestamping each complete event; `stall` bounds the wait for any one chunk.
async fn read_sse(mut resp: reqwest::Response, stall: Duration) -> (Vec<(Instant, String)>, End) {
    let (mut buf, mut events) = (Vec::<u8>::new(), Vec::new());
    let end = loop {
        match tokio::time::timeout(stall, resp.chunk()).await {
            Err(_) => break End::Stalled,
            Ok(Err(_)) => break End::Aborted,
            Ok(Ok(None)) => break End::Finished,
            Ok(Ok(Some(bytes))) => {
                buf.extend_from_slice(&bytes);
                while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
                    let event: Vec<u8> = buf.drain(..pos + 2).collect();
                    let text = String::from_utf8(event[..pos].to_vec()).expect("utf-8 event");
                    let data = text.strip_prefix("data: ").expect("data event").to_owned();
                    events.push((Instant::now(), data));
                }
            }
        }
    };
    (events, end)
}

/// The token texts carried by the events, chat or text completion.
fn tokens_of(events: &[(Instant, String)]) -> String {
    let parse = |d: &String| serde_json::from_str::<Value>(d).ok();
    let text = |v: Value| {
        let c = &v["choices"][0];
        c["delta"]["content"]
            .as_str()
            .or(c["text"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    events
        .iter()
        .filter_map(|(_, d)| parse(d))
        .map(text)
        .collect()
}
