//! Atomic hot reload without restart, and the binary upgrade: under continuous load nothing is
//! lost, a bad config changes nothing, peer state survives, and every trigger works.

use crate::common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Continuous bounded load: `workers` loops until `stop` (or `limit` requests each).
fn start_load(
    url: String,
    workers: usize,
    limit: usize,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    tokio::task::JoinSet<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    let c = client();
    for w in 0..workers {
        let (c, url, stop, sent, failed) = (
            c.clone(),
            url.clone(),
            stop.clone(),
            sent.clone(),
            failed.clone(),
        );
        set.spawn(async move {
            for i in 0..limit {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                match c
                    .post(&url)
                    .body(chat(&format!("{w}-{i}"), false))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => {
                        eprintln!(
                            "failed: {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        );
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("failed: {e:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    (stop, sent, failed, set)
}

fn config(primary: &[&SimHandle], secondary: &SimHandle, weights: (u32, u32)) -> String {
    let p: Vec<String> = primary
        .iter()
        .map(|s| format!("{{ addr: \"{}\" }}", s.addr()))
        .collect();
    format!(
        "clusters:\n  primary:\n    peers: [ {} ]\n  secondary:\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: chat\n    split: [ {{ cluster: primary, weight: {} }}, {{ cluster: secondary, weight: {} }} ]\n",
        p.join(", "),
        secondary.addr(),
        weights.0,
        weights.1
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_rewrites_under_load_lose_nothing_and_bad_ones_change_nothing() {
    let (p1, p2, p3, s1) = (
        sim("p1").await,
        sim("p2").await,
        sim("p3").await,
        sim("s1").await,
    );
    let lb = Balancer::start(&config(&[&p1, &p2], &s1, (1, 0))).await;
    let (stop, sent, failed, mut load) = start_load(lb.url("/v1/chat/completions"), 12, 100_000);
    let c = client();
    let mut valid = 0;
    let mut last_side = "primary";
    for i in 0..50 {
        let before = lb.generation().await;
        if i % 6 == 5 {
            // Invalid: an unknown cluster in the split.
            lb.write_config(
                &config(&[&p1, &p2], &s1, (1, 0))
                    .replace("cluster: secondary", "cluster: secndary"),
            );
            let (status, body) = lb.reload().await;
            assert_eq!(status, 400, "{body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("routes[0].split[1].cluster"),
                "{body}"
            );
            let st = lb.status().await;
            assert!(
                st["last_reload_error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("secndary"),
                "{st}"
            );
            assert_eq!(
                lb.generation().await,
                before,
                "a bad config must not change the generation"
            );
        } else {
            valid += 1;
            let to_secondary = i % 2 == 1;
            let weights = if to_secondary { (0, 1) } else { (1, 0) };
            let primary: Vec<&SimHandle> = if i % 4 == 0 {
                vec![&p1, &p2, &p3]
            } else {
                vec![&p1, &p2]
            };
            lb.write_config(&config(&primary, &s1, weights));
            let (status, body) = lb.reload().await;
            assert_eq!(status, 200, "{body}");
            assert!(lb.generation().await > before);
            assert!(lb.status().await["last_reload_error"].is_null());
            last_side = if to_secondary { "secondary" } else { "primary" };
        }
        // Whatever is in force now answers from the expected side only.
        for _ in 0..5 {
            let r = c
                .post(lb.url("/v1/chat/completions"))
                .body(chat("probe", false))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let who = r.headers()["x-sim-instance"].to_str().unwrap().to_string();
            let side = if who == "s1" { "secondary" } else { "primary" };
            assert_eq!(side, last_side, "reload {i}: served by {who}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    assert!(valid >= 40);
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 200, "load too light: {sent}");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests out of {sent} during reloads"
    );
    let m = lb.metrics().await;
    assert!(
        metric(
            &m,
            "switchyard_config_reloads_total",
            &[("result", "error")]
        ) >= 8.0
    );
    assert!(metric(&m, "switchyard_config_generation", &[]) >= 41.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_breaker_stays_open_across_a_reload_that_changes_its_weight() {
    let dead = sim("dead").await;
    let dead_addr = dead.addr();
    dead.shutdown().await;
    let ok = sim("ok").await;
    let body = |w: u32| {
        format!(
            "clusters:\n  c:\n    breaker: {{ consecutive_failures: 2, open_for: 60s, max_open_for: 120s }}\n    peers: [ {{ addr: \"{dead_addr}\", weight: {w} }}, {{ addr: \"{}\" }} ]\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n",
            ok.addr()
        )
    };
    let lb = Balancer::start(&body(1)).await;
    let c = client();
    let url = lb.admin_url(&format!("/health/circuit-breaker/c/{dead_addr}"));
    for _ in 0..20 {
        assert_eq!(
            c.post(lb.url("/v1/chat/completions"))
                .body("{}")
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let cb: serde_json::Value = c.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(cb["state"], "OPEN", "{cb}");
    let trips = cb["trips"].clone();
    lb.write_config(&body(5));
    assert_eq!(lb.reload().await.0, 200);
    let st = lb.status().await;
    assert_eq!(st["clusters"][0]["peers"][0]["weight"], 5, "{st}");
    let cb: serde_json::Value = c.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(cb["state"], "OPEN", "reload reset the breaker: {cb}");
    assert_eq!(cb["trips"], trips);
    // And the open peer still gets no traffic.
    for _ in 0..10 {
        let r = c
            .post(lb.url("/v1/chat/completions"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-sim-instance"], "ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_file_replacement_by_rename_both_reload() {
    let (p1, s1) = (sim("p1").await, sim("s1").await);
    let lb = Balancer::start(&config(&[&p1], &s1, (1, 0))).await;
    let wait_generation = |want: u64| {
        let lb = &lb;
        wait_until(
            Duration::from_secs(10),
            "config generation",
            move || async move { lb.generation().await >= want },
        )
    };
    assert_eq!(lb.generation().await, 1);
    // File replaced by a rename (as editors and config managers do): no other trigger.
    lb.write_config(&config(&[&p1], &s1, (0, 1)));
    wait_generation(2).await;
    let r = client()
        .post(lb.url("/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-sim-instance"], "s1");
    // SIGHUP reloads even an unchanged file.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let g = lb.generation().await;
    lb.signal("HUP");
    wait_generation(g + 1).await;
    assert!(lb.log().contains("SIGHUP"), "{}", lb.log());
}

/// Rotating an API key in the file is a change the watch reloads, though the digest `/status`
/// shows leaves the keys out (it is the same before and after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_in_the_file_is_reloaded_by_the_watch() {
    let p = sim("p").await;
    let body = |key: &str| {
        format!(
            "clusters:\n  primary:\n    peers:\n      - {{ addr: \"{}\" }}\n    api_keys: {{ keys: [{key}] }}\nroutes:\n  - name: chat\n    match: {{ path_prefix: \"/v1/\" }}\n    split:\n      - {{ cluster: primary, weight: 1 }}\n",
            p.addr()
        )
    };
    let lb = Balancer::start(&body("sk-old")).await;
    let sent_key = || async {
        let r = client()
            .post(lb.url("/v1/chat/completions"))
            .header("x-sim-echo-header", "authorization")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-sim-echo"].to_str().unwrap().to_string()
    };
    assert_eq!(sent_key().await, "Bearer sk-old");
    let shown = lb.status().await["config_sha256"].clone();
    lb.write_config(&body("sk-new"));
    wait_until(
        Duration::from_secs(10),
        "the file watch to reload a rotated key",
        || async { lb.generation().await >= 2 },
    )
    .await;
    assert_eq!(sent_key().await, "Bearer sk-new");
    assert_eq!(
        lb.status().await["config_sha256"],
        shown,
        "the shown digest names no key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_upgrade_under_load_loses_nothing() {
    let (p1, s1) = (sim("p1").await, sim("s1").await);
    let mut old = Balancer::start(&config(&[&p1], &s1, (1, 1))).await;
    let (stop, sent, failed, mut load) = start_load(old.url("/v1/chat/completions"), 8, 100_000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut new = old.spawn_upgrade();
    // The new process waits for the listening sockets; hand them over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.signal("QUIT");
    let before = sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    let after = sent.load(Ordering::Relaxed);
    assert!(
        after - before > 100,
        "load stalled during the upgrade: {before} -> {after}"
    );
    // The new process serves on the same address and admin port.
    let r = client()
        .post(old.url("/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until(
        Duration::from_secs(15),
        "old process did not exit after its grace period",
        || std::future::ready(old.exited()),
    )
    .await;
    let r = client()
        .post(old.url("/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "new process must serve after the old one exited"
    );
    let _ = new.kill();
    let _ = new.wait();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests out of {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigusr2_starts_a_successor_that_takes_over_under_load() {
    let (p1, s1) = (sim("p1").await, sim("s1").await);
    let mut old = Balancer::start(&config(&[&p1], &s1, (1, 1))).await;
    let old_pid = old.status().await["pid"].as_u64().unwrap();
    let (stop, sent, failed, mut load) = start_load(old.url("/v1/chat/completions"), 8, 100_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.signal("USR2");
    // The successor answers the admin API once it has the sockets.
    let start = Instant::now();
    let new_pid = loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no successor took over; log:\n{}",
            old.log()
        );
        if let Ok(r) = client().get(old.admin_url("/status")).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                let pid = v["pid"].as_u64().unwrap_or(0);
                if pid != old_pid && pid != 0 {
                    break pid;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The successor is not our child: make sure it goes away whatever happens below.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(self.0.to_string())
                .status();
        }
    }
    let _successor = KillOnDrop(new_pid as u32);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    wait_until(Duration::from_secs(15), "old process still running", || {
        std::future::ready(old.exited())
    })
    .await;
    let r = client()
        .post(old.url("/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests out of {}",
        sent.load(Ordering::Relaxed)
    );
}
