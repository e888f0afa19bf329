//! The admin dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver): the page loads without console errors, shows the cluster, its peers
//! and the traffic, and shows a peer's breaker going OPEN within seconds of that peer failing. A
//! screenshot is written to `target/test-artifacts/dashboard.png`.
//!
//! Chromium is required: without it this test fails and says what to install (CI installs it
//! with `.ci/setup`).

use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process on a loopback port; killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: the dashboard test needs Debian's chromium and chromium-driver \
         (`bash .ci/setup` installs them; or set {env})",
        path.display()
    );
    path
}

async fn start_driver(dir: &Path) -> Driver {
    let port = free_port();
    let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
    let child = Command::new(binary("CHROMEDRIVER", CHROMEDRIVER))
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start chromedriver");
    let driver = Driver { child, port };
    let c = client();
    wait_until(Duration::from_secs(20), "chromedriver answering", || {
        let c = c.clone();
        async move {
            c.get(format!("http://127.0.0.1:{port}/status"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    driver
}

async fn browser(driver: &Driver, profile: &Path) -> fantoccini::Client {
    let chromium = binary("CHROMIUM", CHROMIUM);
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            // Without the background-networking flags Chromium dials out at start, which a closed
            // network refuses.
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    let caps: serde_json::Map<String, Value> = serde_json::from_value(caps).unwrap();
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    fantoccini::ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session through chromedriver")
}

/// chromedriver's browser log (console messages, failed loads, uncaught errors) since the last
/// call.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

async fn console_errors(b: &fantoccini::Client) -> Vec<Value> {
    let entries = b.issue_cmd(BrowserLog).await.expect("browser log");
    entries
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect()
}

/// The text of the first element matching `selector`, as the page shows it now.
async fn text(b: &fantoccini::Client, selector: &str) -> Option<String> {
    let js = "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;";
    match b.execute(js, vec![json!(selector)]).await {
        Ok(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn artifacts() -> PathBuf {
    // target/tmp for integration tests: the artefacts go beside it, in target/test-artifacts.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_failing_peer_breaker_open_without_console_errors() {
    let (p1, p2, s1) = (sim("p1").await, sim("p2").await, sim("s1").await);
    let body = format!(
        r#"clusters:
  primary:
    breaker: {{ consecutive_failures: 3, open_for: 120s, max_open_for: 300s }}
    peers:
      - {{ addr: "{}", weight: 2 }}
      - {{ addr: "{}" }}
  secondary:
    peers:
      - {{ addr: "{}" }}
routes:
  - name: chat
    match: {{ path_prefix: "/v1/" }}
    split:
      - {{ cluster: primary, weight: 90 }}
      - {{ cluster: secondary, weight: 10 }}
    retry: {{ attempts: 3 }}
    cache: {{ ttl: 10m }}
"#,
        p1.addr(),
        p2.addr(),
        s1.addr()
    );
    let lb = Balancer::start(&body).await;
    let work = tempfile::tempdir().unwrap();
    let driver = start_driver(work.path()).await;
    let b = browser(&driver, &work.path().join("profile")).await;

    // Traffic for the whole test: chats, a few cacheable ones, some streams.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (c, url, stop) = (client(), lb.url("/v1/chat/completions"), stop.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && start.elapsed() < Duration::from_secs(60)
            {
                i += 1;
                let body = match i % 4 {
                    0 => json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
                    1 => chat(&format!("stream {i}"), true),
                    _ => chat(&format!("q {i}"), false),
                };
                if let Ok(r) = c.post(&url).body(body).send().await {
                    let _ = r.bytes().await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    b.goto(&lb.admin_url("/"))
        .await
        .expect("open the dashboard");
    let p2_breaker = format!("tr[data-peer='primary/{}'] .breaker", p2.addr());
    wait_until(
        Duration::from_secs(15),
        "the dashboard lists p2, CLOSED",
        || {
            let (b, sel) = (&b, p2_breaker.clone());
            async move { text(b, &sel).await.as_deref() == Some("CLOSED") }
        },
    )
    .await;
    assert_eq!(
        text(&b, "#generation").await.as_deref(),
        Some("1"),
        "the config generation"
    );
    assert_eq!(text(&b, "#live").await.as_deref(), Some("live"));
    // Let the samples show traffic (one a second) before the failure.
    wait_until(
        Duration::from_secs(15),
        "traffic on the request-rate tile",
        || {
            let b = &b;
            async move {
                text(b, "#tiles .tile .value")
                    .await
                    .and_then(|t| t.parse::<f64>().ok())
                    .is_some_and(|r| r > 0.0)
            }
        },
    )
    .await;

    // p2 fails: its tries are retried elsewhere, its breaker trips, and the page shows it.
    p2.set_failure(Some(Failure::Reset));
    let failed_at = Instant::now();
    wait_until(Duration::from_secs(10), "p2's breaker shown OPEN", || {
        let (b, sel) = (&b, p2_breaker.clone());
        async move { text(b, &sel).await.as_deref() == Some("OPEN") }
    })
    .await;
    let shown_after = failed_at.elapsed();
    let p1_breaker = format!("tr[data-peer='primary/{}'] .breaker", p1.addr());
    assert_eq!(text(&b, &p1_breaker).await.as_deref(), Some("CLOSED"));

    // The recent error rate of p2 shows on its row; a couple of seconds for the samples.
    let p2_errors = format!("tr[data-peer='primary/{}'] .errors", p2.addr());
    wait_until(Duration::from_secs(10), "p2's error rate shown", || {
        let (b, sel) = (&b, p2_errors.clone());
        async move {
            text(b, &sel)
                .await
                .is_some_and(|t| t.ends_with('%') && t != "0%")
        }
    })
    .await;
    let screenshot = b.screenshot().await.expect("screenshot");
    let png = artifacts().join("dashboard.png");
    std::fs::write(&png, &screenshot).unwrap();
    assert!(
        screenshot.starts_with(b"\x89PNG"),
        "a PNG at {}",
        png.display()
    );

    let errors = console_errors(&b).await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = traffic.await;
    b.close().await.expect("close the browser");
    println!(
        "p2 shown OPEN {shown_after:?} after it started failing; screenshot at {}",
        png.display()
    );
}

/// Is the element with id `id` displayed?
async fn shown(b: &fantoccini::Client, id: &str) -> bool {
    let js = "const e = document.getElementById(arguments[0]); \
              return !!e && getComputedStyle(e).display !== 'none';";
    matches!(b.execute(js, vec![json!(id)]).await, Ok(Value::Bool(true)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_protected_reads_the_dashboard_sends_the_admin_token() {
    const TOKEN: &str = "dashboard-test-token-0123456789";
    let s = sim("p").await;
    let head = Head {
        admin: format!("  token: \"{TOKEN}\"\n  protect_reads: true\n"),
        ..Head::default()
    };
    let body = format!(
        "clusters:\n  primary:\n    peers:\n      - {{ addr: \"{}\" }}\n    api_keys: {{ keys: [sk-dash-one, sk-dash-two] }}\nroutes:\n  - name: chat\n    match: {{ path_prefix: \"/v1/\" }}\n    split:\n      - {{ cluster: primary, weight: 1 }}\n",
        s.addr()
    );
    let lb = Balancer::start_with(head, &body).await;
    let c = client();
    // The feed is protected like /status; the page holds no data and is served to anyone.
    for path in ["/dashboard.json", "/status"] {
        let r = c.get(lb.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without the token");
        let r = c
            .get(lb.admin_url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} with the token");
    }
    let page = c.get(lb.admin_url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(!page.text().await.unwrap().contains(TOKEN));

    let work = tempfile::tempdir().unwrap();
    let driver = start_driver(work.path()).await;
    let b = browser(&driver, &work.path().join("profile")).await;

    // With the token in the fragment: the page shows the documents, and the token leaves the
    // address bar at once.
    b.goto(&format!("{}#token={TOKEN}", lb.admin_url("/")))
        .await
        .expect("open the dashboard");
    wait_until(Duration::from_secs(15), "the generation shown", || {
        let b = &b;
        async move { text(b, "#generation").await.as_deref() == Some("1") }
    })
    .await;
    assert_eq!(text(&b, "#live").await.as_deref(), Some("live"));
    assert!(!shown(&b, "auth").await, "no token form with the token");
    // The pool's keys, by fingerprint and state; never the keys themselves.
    let states = b
        .execute(
            "return Array.from(document.querySelectorAll('tr[data-key] .badge'), e => e.textContent);",
            vec![],
        )
        .await
        .expect("the key rows");
    assert_eq!(states, json!(["usable", "usable"]));
    let shown_text = text(&b, "body").await.unwrap_or_default();
    assert!(!shown_text.contains("sk-dash"), "a key on the page");
    let url = b.current_url().await.expect("the page's address");
    assert!(!url.as_str().contains(TOKEN), "the token stays in {url}");
    let errors = console_errors(&b).await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // A tab without it: the page asks, and shows the documents once the token is typed.
    b.execute("sessionStorage.clear();", vec![])
        .await
        .expect("clear the tab's storage");
    b.goto(&lb.admin_url("/"))
        .await
        .expect("open the dashboard");
    wait_until(Duration::from_secs(15), "the token form shown", || {
        let b = &b;
        async move { shown(b, "auth").await }
    })
    .await;
    assert_eq!(text(&b, "#generation").await.as_deref(), Some("–"));
    let input = b
        .find(fantoccini::Locator::Id("auth-token"))
        .await
        .expect("the token field");
    input.send_keys(TOKEN).await.expect("type the token");
    b.find(fantoccini::Locator::Css("#auth-form button"))
        .await
        .expect("the form's button")
        .click()
        .await
        .expect("submit the token");
    wait_until(
        Duration::from_secs(15),
        "the generation shown after the token was typed",
        || {
            let b = &b;
            async move { text(b, "#generation").await.as_deref() == Some("1") }
        },
    )
    .await;
    assert!(!shown(&b, "auth").await);
    b.close().await.expect("close the browser");
}
