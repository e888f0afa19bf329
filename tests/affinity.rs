//! `balance: prefix_affinity` and `load_report` through real sockets: requests sharing a prompt
//! prefix land on one peer (the same one from two switchyard processes), the load bound spills
//! a hot prefix to the next peers, a peer leaving moves only its own prefixes, and a queue the
//! model server reports steers traffic away.

use crate::common::*;
use std::collections::HashMap;
use std::time::Duration;

/// A chat body of `tenant`'s long system prompt and a question.
fn tenant_chat(tenant: usize, question: &str) -> String {
    let system = format!("You are the assistant of tenant {tenant}. ").repeat(60);
    serde_json::json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ],
    })
    .to_string()
}

/// A cluster `pool` of `peers` with `balance: prefix_affinity` (plus `extra` cluster keys), and a
/// route to it.
fn config(peers: &[&SimHandle], extra: &str) -> String {
    let list: String = peers
        .iter()
        .map(|s| format!("      - {{ addr: \"{}\" }}\n", s.addr()))
        .collect();
    format!(
        "clusters:\n  pool:\n    balance: prefix_affinity\n{extra}    peers:\n{list}routes:\n  - name: chat\n    split: [{{ cluster: pool }}]\n    retry: {{ attempts: 1 }}\n"
    )
}

/// Which simulator answered `body` through `b`.
async fn served_by(b: &Balancer, body: String) -> String {
    let r = client()
        .post(b.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    r.headers()["x-sim-instance"]
        .to_str()
        .expect("instance")
        .to_string()
}

async fn sims(n: usize) -> Vec<SimHandle> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(sim(&format!("p{i}")).await);
    }
    v
}

/// Tenant → the peer its requests landed on (asserting they all landed on one).
async fn mapping(b: &Balancer, tenants: usize) -> HashMap<usize, String> {
    let mut map = HashMap::new();
    for t in 0..tenants {
        for q in ["what is 2+2?", "tell me a joke", "summarise the news"] {
            let peer = served_by(b, tenant_chat(t, q)).await;
            let home = map.entry(t).or_insert_with(|| peer.clone());
            assert_eq!(*home, peer, "tenant {t} moved between peers");
        }
    }
    map
}

#[tokio::test]
async fn the_same_prefix_lands_on_the_same_peer_from_two_processes() {
    let s = sims(4).await;
    let refs: Vec<_> = s.iter().collect();
    let a = Balancer::start(&config(&refs, "")).await;
    // The second process lists the peers in another order: the mapping depends on the set only.
    let reversed: Vec<_> = s.iter().rev().collect();
    let b = Balancer::start(&config(&reversed, "")).await;
    let from_a = mapping(&a, 16).await;
    let from_b = mapping(&b, 16).await;
    assert_eq!(from_a, from_b, "two processes disagree");
    let used: std::collections::HashSet<_> = from_a.values().collect();
    assert!(used.len() >= 3, "16 prefixes spread over {used:?}");

    // header:NAME keys on the header alone.
    let h = Balancer::start(&config(
        &refs,
        "    affinity: { key: \"header:x-session\" }\n",
    ))
    .await;
    let mut seen = HashMap::new();
    for i in 0..12 {
        let session = format!("s{}", i % 4);
        let r = client()
            .post(h.url("/v1/chat/completions"))
            .header("x-session", &session)
            .body(tenant_chat(i, "hi"))
            .send()
            .await
            .expect("request");
        let peer = r.headers()["x-sim-instance"].to_str().unwrap().to_string();
        assert_eq!(seen.entry(session).or_insert(peer.clone()), &peer);
    }
}

#[tokio::test]
async fn the_load_bound_spills_a_hot_prefix() {
    let mut s = Vec::new();
    for i in 0..4 {
        s.push(
            sim_with(SimConfig {
                name: format!("p{i}"),
                ttft: Duration::from_millis(600),
                token_delay: Duration::from_millis(1),
                tokens: 2,
                ..SimConfig::default()
            })
            .await,
        );
    }
    let refs: Vec<_> = s.iter().collect();
    let b = Balancer::start(&config(&refs, "    affinity: { load_factor: 1.25 }\n")).await;
    let home = served_by(&b, tenant_chat(3, "warm up")).await;
    // Eight at once of one prefix: the bound ceil(1.25 × 8 / 4) = 3 holds every peer to 3.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let url = b.url("/v1/chat/completions");
            tokio::spawn(async move {
                let r = client()
                    .post(url)
                    .body(tenant_chat(3, &format!("question {i}")))
                    .send()
                    .await
                    .expect("request");
                assert_eq!(r.status(), 200);
                r.headers()["x-sim-instance"].to_str().unwrap().to_string()
            })
        })
        .collect();
    let mut count: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        *count.entry(t.await.expect("task")).or_default() += 1;
    }
    assert!(count.len() >= 3, "the hot prefix stayed on {count:?}");
    assert!(
        count.get(&home).copied().unwrap_or(0) >= 2,
        "{home}: {count:?}"
    );
    for sim in &s {
        assert!(
            sim.stats().max_concurrent() <= 3,
            "{}: over the bound",
            sim.name()
        );
    }
}

#[tokio::test]
async fn a_peer_leaving_moves_only_its_prefixes() {
    let s = sims(4).await;
    let refs: Vec<_> = s.iter().collect();
    let b = Balancer::start(&config(&refs, "")).await;
    let before = mapping(&b, 24).await;
    let gone = s[2].name().to_string();
    let moved = before.values().filter(|p| **p == gone).count();
    assert!(moved > 0, "no prefix on {gone}: {before:?}");

    b.write_config(&config(&[&s[0], &s[1], &s[3]], ""));
    assert_eq!(b.reload().await.0, 200);
    let after = mapping(&b, 24).await;
    for (t, peer) in &before {
        if *peer == gone {
            assert_ne!(after[t], gone);
        } else {
            assert_eq!(after[t], *peer, "tenant {t} moved off a peer that stayed");
        }
    }

    // Back: every prefix returns where it was.
    b.write_config(&config(&refs, ""));
    assert_eq!(b.reload().await.0, 200);
    assert_eq!(mapping(&b, 24).await, before);
}

/// A cluster `pool` of `peers` with `balance` and `load_report` (`lr`, inside braces).
fn reporting(peers: &[&SimHandle], balance: &str, lr: &str) -> String {
    config(peers, "").replacen(
        "balance: prefix_affinity\n",
        &format!("balance: {balance}\n    load_report: {{ {lr} }}\n"),
        1,
    )
}

/// Wait until `/status` shows peer `i` of `pool` reporting `waiting` requests queued.
async fn wait_reported(b: &Balancer, i: usize, waiting: u64) {
    wait_until(Duration::from_secs(10), "the load report", || async {
        let s = b.status().await;
        let r = &s["clusters"][0]["peers"][i]["load_report"];
        r["fresh"] == true && r["waiting"] == waiting
    })
    .await;
}

/// Requests each simulator answered, of `n` sent one after another.
async fn spread(b: &Balancer, n: usize) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for i in 0..n {
        *count
            .entry(served_by(b, tenant_chat(i, "q")).await)
            .or_default() += 1;
    }
    count
}

#[tokio::test]
async fn a_reported_queue_steers_traffic_away() {
    let s = sims(2).await;
    let refs: Vec<_> = s.iter().collect();
    // least_inflight weighs the queue p0 reports: it wins only when both draws land on it.
    s[0].set_reported_load(Some(40), None);
    let b = Balancer::start(&reporting(&refs, "least_inflight", "interval: 100ms")).await;
    wait_reported(&b, 0, 40).await;
    let count = spread(&b, 100).await;
    let p0 = count.get("p0").copied().unwrap_or(0);
    assert!(
        p0 < 40,
        "p0 reports a queue of 40 and still got {p0} of 100"
    );
    let m = b.metrics().await;
    let peer = s[0].addr().to_string();
    let labels = [("cluster", "pool"), ("peer", peer.as_str())];
    assert_eq!(metric(&m, "switchyard_peer_queue_waiting", &labels), 40.0);
    let kv = metric(&m, "switchyard_peer_kv_cache_usage", &labels);
    assert!((0.0..=1.0).contains(&kv), "{kv}");

    // prefix_affinity counts the reported queue in its bound: p0's prefixes spill to p1.
    let a = Balancer::start(&reporting(&refs, "prefix_affinity", "interval: 100ms")).await;
    wait_reported(&a, 0, 40).await;
    assert_eq!(spread(&a, 20).await.get("p0"), None);

    // Over max_waiting, or with its KV cache full, a peer is skipped while another can serve.
    let c = Balancer::start(&reporting(
        &refs,
        "round_robin",
        "interval: 100ms, max_waiting: 10",
    ))
    .await;
    wait_reported(&c, 0, 40).await;
    assert_eq!(spread(&c, 10).await.get("p0"), None);
    s[0].set_reported_load(None, Some(1.0));
    wait_reported(&c, 0, 0).await;
    wait_until(Duration::from_secs(10), "p0 full", || async {
        c.status().await["clusters"][0]["peers"][0]["load_report"]["full"] == true
    })
    .await;
    assert_eq!(spread(&c, 10).await.get("p0"), None);
    // Both full: still served.
    s[1].set_reported_load(None, Some(1.0));
    wait_until(Duration::from_secs(10), "p1 full", || async {
        c.status().await["clusters"][0]["peers"][1]["load_report"]["full"] == true
    })
    .await;
    assert_eq!(spread(&c, 10).await.values().sum::<usize>(), 10);
    // Reports back to normal: round robin again.
    s[0].set_reported_load(None, None);
    s[1].set_reported_load(None, None);
    wait_until(Duration::from_secs(10), "reports clear", || async {
        let st = c.status().await;
        let peers = &st["clusters"][0]["peers"];
        peers[0]["load_report"]["full"] == false && peers[1]["load_report"]["full"] == false
    })
    .await;
    assert_eq!(spread(&c, 10).await.get("p0"), Some(&5));
}
