//! `switchyard check` accepts the shipped configs and rejects bad ones, naming the key path and
//! line, with a non-zero exit (like `nginx -t`).

use std::process::Command;

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let mut msg = String::from_utf8_lossy(&out.stderr).to_string();
    msg.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.success(), msg)
}

const BASE: &str = r#"listeners:
  - addr: "127.0.0.1:8080"
clusters:
  primary:
    peers:
      - { addr: "127.0.0.1:8001", weight: 2 }
  secondary:
    peers:
      - { addr: "127.0.0.1:8002" }
routes:
  - name: chat
    match: { path_prefix: "/v1/" }
    split:
      - { cluster: primary, weight: 90 }
      - { cluster: secondary, weight: 10 }
    timeouts: { connect: 1s, first_byte: 30s }
"#;

#[test]
fn shipped_configs_pass() {
    for f in [
        "conf/switchyard.yaml",
        "conf/demo.yaml",
        "conf/hosted-provider.yaml",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["check", "-c", f])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(check(BASE).0);
}

#[test]
fn bad_configs_fail_naming_key_path_and_line() {
    let cases = [
        (
            "cluster: secondary",
            "cluster: secndary",
            ":15: routes[0].split[1].cluster: unknown cluster \"secndary\"",
        ),
        (
            "weight: 90 }",
            "weight: 0 }\n      - { cluster: primary, weight: 1 }",
            ":15: routes[0].split[1].cluster: cluster \"primary\" is listed twice",
        ),
        (
            "127.0.0.1:8002",
            "localhost",
            ":9: clusters.secondary.peers[0].addr: bad address",
        ),
        (
            "connect: 1s",
            "connect: 1 fortnight",
            ":16: routes[0].timeouts.connect: bad duration",
        ),
        (
            // Bounded, so that no deadline can overflow (this used to panic every request).
            "first_byte: 30s",
            "first_byte: 30s, total: 400000000000y",
            ":16: routes[0].timeouts.total: bad duration \"400000000000y\": 400000000000years is longer than the longest duration accepted, 365days",
        ),
        (
            "first_byte: 30s",
            "first_bite: 30s",
            ":16: routes[0].timeouts.first_bite: unknown field",
        ),
        (
            "  - name: chat",
            "  - name: \"chat room\"",
            ":11: routes[0].name: bad name",
        ),
        (
            "listeners:\n  - addr: \"127.0.0.1:8080\"\n",
            "",
            "listeners: at least one listener",
        ),
    ];
    for (from, to, want) in cases {
        assert!(BASE.contains(from), "case text {from:?}");
        let (ok, msg) = check(&BASE.replacen(from, to, 1));
        assert!(!ok, "{to:?} must fail");
        assert!(msg.contains(want), "{to:?}: expected {want:?} in {msg:?}");
    }
    let zero = BASE
        .replace("weight: 90", "weight: 0")
        .replace("weight: 10", "weight: 0");
    let (ok, msg) = check(&zero);
    assert!(
        !ok && msg.contains(":13: routes[0].split: total split weight is zero"),
        "{msg}"
    );
    let (ok, msg) = check("routes: [");
    assert!(!ok && msg.contains("c.yaml:"), "{msg}");
}

/// Peers may be given by DNS name (`host:port`); `check` accepts them without resolving them.
#[test]
fn named_peers_pass_without_resolving() {
    let (ok, msg) = check(&BASE.replacen("127.0.0.1:8002", "localhost:8101", 1));
    assert!(ok, "{msg}");
    let named = BASE.replacen(
        "- { addr: \"127.0.0.1:8001\", weight: 2 }",
        "- { addr: \"vllm.models.svc.cluster.local:8000\", weight: 2 }\n    dns_refresh: 5s\n    tls: { sni: api.example.com }\n    host: api.example.com",
        1,
    );
    assert!(named.contains("vllm.models"), "case text");
    let (ok, msg) = check(&named);
    assert!(ok, "{msg}");
}
