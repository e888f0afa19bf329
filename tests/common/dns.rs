//! A tiny authoritative DNS server on a loopback UDP port, for tests of peers given by name: it
//! answers A and AAAA questions for the names it is given (TTL 0), NXDOMAIN for any other, and
//! its answers can be changed while it runs. Test code only: one question per message, no
//! compression in questions, no EDNS.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;

/// A running DNS server; stops when dropped.
pub struct Dns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<HashMap<String, Vec<IpAddr>>>>,
    queries: Arc<Mutex<HashMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Dns {
    /// Start a server on 127.0.0.1 with an empty zone.
    pub async fn start() -> Dns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind dns");
        let addr = socket.local_addr().expect("dns addr");
        let zone: Arc<Mutex<HashMap<String, Vec<IpAddr>>>> = Arc::default();
        let queries: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let (z, q) = (zone.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some((name, answer)) = respond(&buf[..n], &z) {
                    *q.lock().unwrap().entry(name).or_default() += 1;
                    let _ = socket.send_to(&answer, from).await;
                }
            }
        });
        Dns {
            addr,
            zone,
            queries,
            task,
        }
    }

    /// Make `name` resolve to `ips` (none: NXDOMAIN).
    pub fn set(&self, name: &str, ips: &[IpAddr]) {
        let mut zone = self.zone.lock().unwrap();
        if ips.is_empty() {
            zone.remove(&name.to_ascii_lowercase());
        } else {
            zone.insert(name.to_ascii_lowercase(), ips.to_vec());
        }
    }

    /// Questions (A and AAAA each count) asked about `name` so far.
    pub fn queries(&self, name: &str) -> u64 {
        let q = self.queries.lock().unwrap();
        q.get(&name.to_ascii_lowercase()).copied().unwrap_or(0)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer to one query: the name asked and the response message.
fn respond(q: &[u8], zone: &Mutex<HashMap<String, Vec<IpAddr>>>) -> Option<(String, Vec<u8>)> {
    if q.len() < 12 {
        return None;
    }
    // The question: labels, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = q.get(12..i + 4)?;
    let name = labels.join(".");
    let found = zone.lock().unwrap().get(&name).cloned();
    let answers: Vec<IpAddr> = found
        .iter()
        .flatten()
        .copied()
        .filter(|ip| match ip {
            IpAddr::V4(_) => qtype == 1,
            IpAddr::V6(_) => qtype == 28,
        })
        .collect();
    let rd = q[2] & 0x01;
    let rcode = if found.is_some() { 0 } else { 3 };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&q[..2]);
    out.push(0x84 | rd); // QR, AA, RD as asked
    out.push(0x80 | rcode); // RA
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for ip in answers {
        out.extend_from_slice(&[0xC0, 0x0C]); // the name of the question
        let (t, data) = match ip {
            IpAddr::V4(v4) => (1u16, v4.octets().to_vec()),
            IpAddr::V6(v6) => (28u16, v6.octets().to_vec()),
        };
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // IN
        out.extend_from_slice(&0u32.to_be_bytes()); // TTL 0
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some((name, out))
}
