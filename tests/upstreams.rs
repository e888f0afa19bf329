//! Real upstreams, through real sockets: peers over TLS (a CA made in the test, a TLS front
//! before each simulator), SNI and `Host` as configured, a wrong CA failing over, connections and
//! TLS sessions reused, client credentials kept from a keyed upstream, and peers given by DNS
//! name (a DNS server the test runs on loopback) whose address set changes without a reload.

use crate::common::dns::Dns;
use crate::common::tls::{Ca, TlsFront};
use crate::common::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

async fn post(b: &Balancer, body: String, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = client()
        .post(b.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(20))
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

fn cluster_status(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_default()
}

fn peer_addrs(status: &serde_json::Value, cluster: &str) -> Vec<String> {
    let c = cluster_status(status, cluster);
    let mut addrs: Vec<String> = c["peers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["addr"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    addrs.sort();
    addrs
}

/// Two TLS fronts on the same port, one on 127.0.0.1 and one on [::1], each before its own
/// simulator: the two addresses a name can resolve to in a loopback-only test.
async fn dual_stack_fronts(leaf: &crate::common::tls::Leaf) -> (u16, [(TlsFront, SimHandle); 2]) {
    for _ in 0..50 {
        let port = free_port();
        let (a, b) = (sim("sim-v4").await, sim("sim-v6").await);
        let Ok(fa) = TlsFront::try_start(SocketAddr::new(V4, port), a.addr(), leaf).await else {
            continue;
        };
        let Ok(fb) = TlsFront::try_start(SocketAddr::new(V6, port), b.addr(), leaf).await else {
            continue;
        };
        return (port, [(fa, a), (fb, b)]);
    }
    panic!("no port free on both 127.0.0.1 and [::1]");
}

/// A TLS upstream with a test CA serves plain requests, streams, health checks, key probes and
/// cache warm-up; SNI and `Host` are the configured ones; the client's credentials (and the
/// headers of `strip_headers`) never reach the keyed upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_serves_requests_streams_probes_and_warm_up_with_sni_and_host() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let leaf = ca.leaf(&["model.test"]);
    let s = sim("hosted").await;
    let front = TlsFront::start("127.0.0.1:0".parse().unwrap(), s.addr(), &leaf).await;
    let warm = dir.path().join("warm.jsonl");
    std::fs::write(
        &warm,
        r#"{"body": {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "warm me"}]}}"#,
    )
    .unwrap();
    let body = format!(
        r#"clusters:
  hosted:
    peers: [{{ addr: "{front}" }}]
    tls: {{ sni: model.test, ca_file: "{ca}" }}
    host: api.model.test
    health_check: {{ path: /health, interval: 200ms, timeout: 2s, healthy_threshold: 1 }}
    api_keys:
      header: x-api-key
      keys: [k-one, k-two]
      strip_headers: [x-tenant]
      failover:
        failure_threshold: 1
        health_check:
          method: POST
          path: /v1/chat/completions
          body: '{{"model": "m", "messages": [{{"role": "user", "content": "probe"}}]}}'
          interval: 200ms
routes:
  - name: chat
    match: {{ path_prefix: "/v1/" }}
    split: [{{ cluster: hosted }}]
    cache: {{ ttl: 60s, warm: "{warm}" }}
"#,
        front = front.addr,
        ca = ca.file.display(),
        warm = warm.display(),
    );
    let b = Balancer::start_with(
        Head {
            dir: Some(dir),
            ..Head::default()
        },
        &body,
    )
    .await;
    b.wait_ready().await;

    // Warm-up reached the upstream (over TLS: the front is the only way to the simulator).
    wait_until(Duration::from_secs(15), "warm-up stored", || async {
        b.status().await["cache"]["entries"].as_u64() == Some(1)
    })
    .await;
    assert!(s.stats().health_hits() > 0, "health checks went over TLS");

    let creds = [
        ("authorization", "Bearer client-token"),
        ("x-api-key", "client-key"),
        ("api-key", "client-key-2"),
        ("x-tenant", "tenant-7"),
        ("x-keep", "kept"),
    ];
    let (status, text) = post(&b, chat("plain", false), &creds).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"served_by\":\"hosted\""), "{text}");
    let (status, text) = post(&b, chat("stream", true), &creds).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("data: [DONE]"), "{text}");

    let hs = front.handshakes();
    assert!(!hs.is_empty());
    for h in &hs {
        assert_eq!(h.sni.as_deref(), Some("model.test"), "{hs:?}");
        assert_eq!(h.alpn.as_deref(), Some("http/1.1"), "{hs:?}");
    }
    let seen = front.received().to_ascii_lowercase();
    assert!(seen.contains("host: api.model.test\r\n"), "{seen}");
    assert!(seen.contains("x-keep: kept\r\n"), "{seen}");
    assert!(
        seen.contains("x-api-key: k-"),
        "the pool's key is sent: {seen}"
    );
    for leaked in [
        "client-token",
        "client-key",
        "tenant-7",
        "authorization:",
        "api-key: client",
    ] {
        assert!(
            !seen.contains(leaked),
            "{leaked:?} reached the upstream: {seen}"
        );
    }

    // A key the provider rejects is taken out, probed over TLS while out, and back once the
    // probe passes; clients never see the rejection.
    s.set_key_rule(
        "k-one",
        Some(switchyard::sim::KeyRule {
            status: 401,
            retry_after: None,
            code: None,
        }),
    );
    let id = switchyard::keys::fingerprint("k-one");
    let key_disabled = |st: serde_json::Value| {
        cluster_status(&st, "hosted")["api_keys"]
            .as_array()
            .and_then(|ks| ks.iter().find(|k| k["key_id"] == id.as_str()).cloned())
            .is_some_and(|k| k["disabled"] == true)
    };
    for i in 0..4 {
        let (status, text) = post(&b, chat(&format!("k{i}"), false), &[]).await;
        assert_eq!(status, 200, "{text}");
    }
    assert!(key_disabled(b.status().await), "k-one is out");
    let hits = s.key_hits("k-one");
    wait_until(Duration::from_secs(10), "k-one probed", || async {
        s.key_hits("k-one") > hits
    })
    .await;
    s.set_key_rule("k-one", None);
    wait_until(
        Duration::from_secs(10),
        "k-one back after its probe",
        || async { !key_disabled(b.status().await) },
    )
    .await;
}

/// Tries reuse a pooled TLS connection, and a new connection resumes the TLS session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_are_pooled_and_sessions_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let leaf = ca.leaf(&["127.0.0.1"]);
    let s = sim("pooled").await;
    let front = TlsFront::start("127.0.0.1:0".parse().unwrap(), s.addr(), &leaf).await;
    let b = Balancer::start(&format!(
        "clusters:\n  c:\n    peers: [{{ addr: \"{}\" }}]\n    tls: {{ ca_file: \"{}\" }}\nroutes:\n  - name: r\n    split: [{{ cluster: c }}]\n",
        front.addr,
        ca.file.display()
    ))
    .await;
    for i in 0..6 {
        let (status, text) = post(&b, chat(&format!("r{i}"), false), &[]).await;
        assert_eq!(status, 200, "{text}");
    }
    let hs = front.handshakes();
    assert_eq!(
        hs.len(),
        1,
        "one TLS connection for sequential tries: {hs:?}"
    );
    // An IP peer without sni sends no SNI and is verified by its IP.
    assert_eq!(hs[0].sni, None);

    front.drop_connections();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, text) = post(&b, chat("after", false), &[]).await;
    assert_eq!(status, 200, "{text}");
    let hs = front.handshakes();
    assert_eq!(hs.len(), 2, "{hs:?}");
    assert!(
        !hs[0].resumed && hs[1].resumed,
        "the second connection resumed: {hs:?}"
    );
    assert_eq!(s.stats().requests(), 7);
}

/// A peer whose certificate does not verify is a connect failure: the try goes to the other
/// peer, the breaker counts it, the log says why, and nothing is sent to it in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fails_over_to_another_peer() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let other = Ca::new(dir.path(), "other");
    let (bad_sim, good_sim) = (sim("bad").await, sim("good").await);
    let bad = TlsFront::start(
        "127.0.0.1:0".parse().unwrap(),
        bad_sim.addr(),
        &other.leaf(&["model.test"]),
    )
    .await;
    let good = TlsFront::start(
        "127.0.0.1:0".parse().unwrap(),
        good_sim.addr(),
        &ca.leaf(&["model.test"]),
    )
    .await;
    let b = Balancer::start(&format!(
        r#"clusters:
  c:
    peers: [{{ addr: "{bad}" }}, {{ addr: "{good}" }}]
    tls: {{ sni: model.test, ca_file: "{ca}", verify: true }}
    breaker: {{ consecutive_failures: 100 }}
routes:
  - name: r
    split: [{{ cluster: c }}]
"#,
        bad = bad.addr,
        good = good.addr,
        ca = ca.file.display()
    ))
    .await;
    for i in 0..6 {
        let (status, text) = post(&b, chat(&format!("f{i}"), false), &[]).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"served_by\":\"good\""), "{text}");
    }
    assert!(bad.failed_handshakes() >= 1, "the bad peer was tried");
    assert!(bad.handshakes().is_empty());
    assert_eq!(bad_sim.stats().requests(), 0, "never a downgrade");
    assert_eq!(good_sim.stats().requests(), 6);
    let m = b.metrics().await;
    let retried = metric(
        &m,
        "switchyard_upstream_retry_total",
        &[
            ("route", "r"),
            ("cluster", "c"),
            ("reason", "connect_failure"),
        ],
    );
    assert!(retried >= 1.0, "{m}");
    let st = b.status().await;
    let bad_peer = cluster_status(&st, "c")["peers"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["addr"] == bad.addr.to_string())
                .cloned()
        })
        .unwrap_or_default();
    assert!(
        bad_peer["breaker"]["failure_count"].as_u64().unwrap_or(0) >= 1,
        "{bad_peer}"
    );
    let log = b.log();
    assert!(log.contains("invalid peer certificate"), "{log}");
}

/// A cluster of one named peer whose name gains an address and then loses the first: picked up
/// without a reload and without a failed request; SNI and `Host` default to the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_whose_addresses_change_is_followed_without_reload_or_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let leaf = ca.leaf(&["model.test"]);
    let (port, [(fa, a), (fb, bsim)]) = dual_stack_fronts(&leaf).await;
    let dns = Dns::start().await;
    dns.set("model.test", &[V4]);
    let b = Arc::new(
        Balancer::start(&format!(
            r#"resolver: {{ servers: ["{dns}"], timeout: 1s }}
clusters:
  c:
    peers: [{{ addr: "model.test:{port}" }}]
    dns_refresh: 200ms
    tls: {{ ca_file: "{ca}" }}
routes:
  - name: r
    split: [{{ cluster: c }}]
"#,
            dns = dns.addr,
            ca = ca.file.display()
        ))
        .await,
    );
    let v4 = format!("127.0.0.1:{port}");
    let v6 = format!("[::1]:{port}");
    wait_until(Duration::from_secs(10), "model.test resolved", || async {
        peer_addrs(&b.status().await, "c") == [v4.clone()]
    })
    .await;
    let st = cluster_status(&b.status().await, "c");
    assert_eq!(st["dns"][0]["name"], format!("model.test:{port}"));
    assert_eq!(st["dns"][0]["addresses"][0], v4.as_str());
    assert!(st["dns"][0]["resolved_at"].is_string(), "{st}");

    // Requests all along, one at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (b, stop) = (b.clone(), stop.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..3000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                statuses.push(post(&b, chat(&format!("t{i}"), false), &[]).await);
            }
            statuses
        })
    };
    dns.set("model.test", &[V4, V6]);
    wait_until(
        Duration::from_secs(10),
        "the new address takes traffic",
        || async { bsim.stats().requests() > 0 },
    )
    .await;
    dns.set("model.test", &[V6]);
    wait_until(
        Duration::from_secs(10),
        "the old address is gone",
        || async { peer_addrs(&b.status().await, "c") == [v6.clone()] },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let on_a = a.stats().requests();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        a.stats().requests(),
        on_a,
        "no new request to a removed address"
    );
    stop.store(true, Ordering::Relaxed);
    let statuses = traffic.await.unwrap();
    assert!(statuses.len() > 10, "{}", statuses.len());
    let failed: Vec<_> = statuses.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(bsim.stats().requests() > 0 && a.stats().requests() > 0);
    assert_eq!(b.generation().await, 1, "no reload");

    for front in [&fa, &fb] {
        for h in front.handshakes() {
            assert_eq!(h.sni.as_deref(), Some("model.test"));
        }
    }
    let seen = fb.received().to_ascii_lowercase();
    assert!(
        seen.contains(&format!("host: model.test:{port}\r\n")),
        "{seen}"
    );
}

/// A connect failure to an address of a name resolves the name again at once (bounded), long
/// before its `dns_refresh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_failure_resolves_the_name_again_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let leaf = ca.leaf(&["model.test"]);
    let (port, [(fa, _a), (_fb, bsim)]) = dual_stack_fronts(&leaf).await;
    let dns = Dns::start().await;
    dns.set("model.test", &[V4]);
    let b = Balancer::start(&format!(
        r#"resolver: {{ servers: ["{dns}"] }}
clusters:
  c:
    peers: [{{ addr: "model.test:{port}" }}]
    dns_refresh: 1h
    tls: {{ ca_file: "{ca}" }}
routes:
  - name: r
    split: [{{ cluster: c }}]
"#,
        dns = dns.addr,
        ca = ca.file.display()
    ))
    .await;
    wait_until(Duration::from_secs(10), "model.test resolved", || async {
        peer_addrs(&b.status().await, "c").len() == 1
    })
    .await;
    let (status, text) = post(&b, chat("first", false), &[]).await;
    assert_eq!(status, 200, "{text}");
    // The name moves, and the old address stops answering.
    dns.set("model.test", &[V6]);
    drop(fa);
    let asked = dns.queries("model.test");
    let start = std::time::Instant::now();
    let mut served = false;
    for i in 0..100 {
        let (status, _) = post(&b, chat(&format!("m{i}"), false), &[]).await;
        if status == 200 && bsim.stats().requests() > 0 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served,
        "the new address was found long before dns_refresh (1h)"
    );
    let secs = start.elapsed().as_secs() + 2;
    let more = dns.queries("model.test") - asked;
    // A and AAAA per resolution, at most one resolution a second.
    assert!(more >= 2 && more <= 2 * secs, "{more} questions in {secs}s");
}

/// A name that does not resolve leaves its cluster empty (503, shown in `/status`) until it
/// does; then it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_leaves_the_cluster_empty_until_it_does() {
    let s = sim("late").await;
    let dns = Dns::start().await;
    let port = s.addr().port();
    let b = Balancer::start(&format!(
        r#"resolver: {{ servers: ["{dns}"] }}
clusters:
  c:
    peers: [{{ addr: "late.test:{port}" }}]
    dns_refresh: 200ms
routes:
  - name: r
    split: [{{ cluster: c }}]
"#,
        dns = dns.addr
    ))
    .await;
    wait_until(
        Duration::from_secs(10),
        "the resolution error shown",
        || async { cluster_status(&b.status().await, "c")["dns"][0]["error"].is_string() },
    )
    .await;
    let st = cluster_status(&b.status().await, "c");
    assert_eq!(st["peers"].as_array().map(Vec::len), Some(0), "{st}");
    assert!(st["dns"][0]["resolved_at"].is_null(), "{st}");
    let (status, text) = post(&b, chat("early", false), &[]).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("no_healthy_upstream"), "{text}");
    assert!(b.log().contains("late.test"), "logged");

    dns.set("late.test", &[V4]);
    wait_until(
        Duration::from_secs(10),
        "served once it resolves",
        || async { post(&b, chat("later", false), &[]).await.0 == 200 },
    )
    .await;
    // IP peers' default Host is the client's; a named peer's is its name (with a port that is
    // not the scheme's).
    let r = client()
        .post(b.url("/v1/chat/completions"))
        .header("x-sim-echo-header", "host")
        .body(chat("host", false))
        .send()
        .await
        .unwrap();
    let host = r.headers().get("x-sim-echo").cloned();
    assert_eq!(host.unwrap().to_str().unwrap(), format!("late.test:{port}"));
    assert!(cluster_status(&b.status().await, "c")["dns"][0]["error"].is_null());
}

/// `switchyard check` accepts named peers without resolving them; with `--resolve`, a name that
/// does not resolve is an error naming the key and line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_resolves_names_only_when_asked() {
    let dns = Dns::start().await;
    dns.set("model.test", &[V4, V6]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        format!(
            "resolver: {{ servers: [\"{}\"] }}\nlisteners: [{{ addr: \"127.0.0.1:8080\" }}]\nclusters:\n  a:\n    peers:\n      - {{ addr: \"model.test:8000\" }}\n  b:\n    peers:\n      - {{ addr: \"127.0.0.1:8001\" }}\n      - {{ addr: \"missing.test:8000\" }}\nroutes:\n  - name: r\n    split: [{{ cluster: a }}, {{ cluster: b }}]\n",
            dns.addr
        ),
    )
    .unwrap();
    let run = |resolve: bool| {
        let path = path.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
                cmd.args(["check", "-c"]).arg(&path);
                if resolve {
                    cmd.arg("--resolve");
                }
                let out = cmd.output().unwrap();
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                (out.status.success(), text)
            })
            .await
            .unwrap()
        }
    };
    let (ok, text) = run(false).await;
    assert!(ok, "{text}");
    assert_eq!(
        dns.queries("missing.test"),
        0,
        "nothing resolved without --resolve"
    );
    let (ok, text) = run(true).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains(":10: clusters.b.peers[1].addr: \"missing.test:8000\" does not resolve"),
        "{text}"
    );
    assert!(
        text.contains("model.test:8000: [127.0.0.1:8000, [::1]:8000]"),
        "{text}"
    );
    dns.set("missing.test", &[V4]);
    let (ok, text) = run(true).await;
    assert!(ok, "{text}");
}

/// With a key pool whose header is `x-api-key`, the client's own `authorization` (its token for
/// switchyard) does not reach the upstream next to the pool's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_cluster_never_forwards_the_clients_authorization() {
    let s = sim("keyed").await;
    let b = Balancer::start(&format!(
        "clusters:\n  c:\n    peers: [{{ addr: \"{}\" }}]\n    api_keys: {{ header: x-api-key, keys: [pool-key] }}\nroutes:\n  - name: r\n    split: [{{ cluster: c }}]\n",
        s.addr()
    ))
    .await;
    for (echo, want) in [("authorization", None), ("x-api-key", Some("pool-key"))] {
        let r = client()
            .post(b.url("/v1/chat/completions"))
            .header("authorization", "Bearer client-token")
            .header("x-sim-echo-header", echo)
            .body(chat("who", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let got = r
            .headers()
            .get("x-sim-echo")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(got.as_deref(), want, "{echo} upstream");
    }
    assert_eq!(s.key_hits("pool-key"), 2);
}
