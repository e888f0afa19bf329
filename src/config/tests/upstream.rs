//! How a cluster's peers are reached: addresses by name, `tls` (files checked, errors naming the
//! key), `host` and the path prefixes, `api_keys.strip_headers`, and `resolver`.

use super::*;

/// A config with one cluster whose body is `cluster` (indented by four spaces) and a top-level
/// `extra`.
fn one(cluster: &str, extra: &str) -> String {
    format!(
        "listeners: [{{ addr: \"127.0.0.1:8080\" }}]\n{extra}clusters:\n  c:\n{cluster}routes:\n  - name: r\n    split: [{{ cluster: c }}]\n"
    )
}

#[test]
fn peers_are_addresses_or_names() {
    let c = parse(
        &one(
            "    peers:\n      - { addr: \"10.0.0.1:8000\" }\n      - { addr: \"[::1]:8000\" }\n      - { addr: \"VLLM.models.svc.cluster.local:8000\" }\n      - { addr: \"localhost:8101\" }\n",
            "",
        ),
        "t",
    )
    .unwrap();
    let peers: Vec<String> = c.clusters[0]
        .peers
        .iter()
        .map(|p| p.addr.to_string())
        .collect();
    assert_eq!(
        peers,
        [
            "10.0.0.1:8000",
            "[::1]:8000",
            "vllm.models.svc.cluster.local:8000",
            "localhost:8101"
        ]
    );
    assert_eq!(
        c.clusters[0].peers[2].addr.host(),
        Some("vllm.models.svc.cluster.local")
    );
    assert_eq!(c.named_peers().count(), 2);
    assert_eq!(c.clusters[0].dns_refresh, DNS_REFRESH);

    for addr in [
        "localhost",
        "host:0",
        "host:99999",
        "999.1.1.1:80",
        "a..b:80",
        "-a:80",
        "a b:80",
    ] {
        let inv = bad(&one(&format!("    peers: [{{ addr: \"{addr}\" }}]\n"), ""));
        assert_eq!(inv.path, "clusters.c.peers[0].addr", "{addr}: {inv}");
        assert!(
            inv.message.contains("expected IP:port or host:port"),
            "{inv}"
        );
    }
    let inv = bad(&one(
        "    peers: [{ addr: \"m.svc:80\" }, { addr: \"M.svc:80\" }]\n",
        "",
    ));
    assert_eq!(inv.path, "clusters.c.peers[1].addr", "{inv}");
    let inv = bad(&one(
        "    peers: [{ addr: \"m.svc:80\" }]\n    dns_refresh: 0s\n",
        "",
    ));
    assert_eq!(inv.path, "clusters.c.dns_refresh", "{inv}");
}

#[test]
fn tls_files_are_loaded_and_bad_ones_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let client = rcgen::generate_simple_self_signed(vec!["client.test".to_string()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["other.test".to_string()]).unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (ca_file, cert, key, other_key) = (
        file("ca.pem", &ca_pem),
        file("client.crt", &client.cert.pem()),
        file("client.key", &client.key_pair.serialize_pem()),
        file("other.key", &other.key_pair.serialize_pem()),
    );
    let with_tls = |tls: &str| {
        one(
            &format!("    peers: [{{ addr: \"m.svc:443\" }}]\n    tls: {tls}\n"),
            "",
        )
    };

    let c = parse(
        &with_tls(&format!(
            "{{ sni: API.test, ca_file: \"{ca_file}\", cert: \"{cert}\", key: \"{key}\" }}"
        )),
        "t",
    )
    .unwrap();
    let t = c.clusters[0].tls.as_ref().unwrap();
    assert_eq!((t.sni.as_deref(), t.verify), (Some("api.test"), true));
    assert_eq!(t.ca.as_ref().map(|s| s.len()), Some(1));
    assert!(t.client_cert.is_some());
    // The same settings and files give the same digest; another setting another one.
    let again = parse(
        &with_tls(&format!(
            "{{ sni: api.test, ca_file: \"{ca_file}\", cert: \"{cert}\", key: \"{key}\" }}"
        )),
        "t",
    )
    .unwrap();
    assert_eq!(again.clusters[0].tls, c.clusters[0].tls);
    let off = parse(&with_tls("{ verify: false }"), "t").unwrap();
    let off = off.clusters[0].tls.as_ref().unwrap();
    assert!(!off.verify && off.ca.is_none() && off.sni.is_none());
    assert_ne!(Some(off), c.clusters[0].tls.as_ref());

    let cases = [
        (
            "{ ca_file: /nonexistent/ca.pem }".to_string(),
            "clusters.c.tls.ca_file",
        ),
        (
            format!("{{ ca_file: \"{key}\" }}"),
            "clusters.c.tls.ca_file",
        ),
        (format!("{{ cert: \"{cert}\" }}"), "clusters.c.tls.key"),
        (format!("{{ key: \"{key}\" }}"), "clusters.c.tls.cert"),
        (
            format!("{{ cert: \"{cert}\", key: \"{other_key}\" }}"),
            "clusters.c.tls.key",
        ),
        (
            format!("{{ cert: \"{key}\", key: \"{key}\" }}"),
            "clusters.c.tls.cert",
        ),
        ("{ sni: \"bad name\" }".to_string(), "clusters.c.tls.sni"),
        ("{ verfiy: false }".to_string(), "clusters.c.tls.verfiy"),
    ];
    for (tls, path) in cases {
        let inv = bad(&with_tls(&tls));
        assert_eq!(inv.path, path, "{tls}: {inv}");
        assert_eq!(inv.line, Some(5), "{tls}: {inv}");
    }
}

#[test]
fn host_and_prefixes_and_strip_headers() {
    let c = parse(
        &one(
            "    peers: [{ addr: \"10.0.0.1:443\" }]\n    host: api.example.com\n    strip_prefix: /v1/\n    add_prefix: /openai/v1\n    api_keys: { keys: [k], header: api-key, strip_headers: [Cookie, x-tenant] }\n",
            "",
        ),
        "t",
    )
    .unwrap();
    let cl = &c.clusters[0];
    assert_eq!(cl.rewrite.host.as_ref().unwrap(), "api.example.com");
    assert_eq!(cl.rewrite.strip_prefix.as_deref(), Some("/v1"));
    assert_eq!(cl.rewrite.add_prefix.as_deref(), Some("/openai/v1"));
    let strip: Vec<&str> = cl
        .api_keys
        .as_ref()
        .unwrap()
        .strip_headers
        .iter()
        .map(|h| h.as_str())
        .collect();
    assert_eq!(strip, ["cookie", "x-tenant"]);

    let cases = [
        ("    host: \"a b\"\n", "clusters.c.host"),
        ("    host: \"\"\n", "clusters.c.host"),
        ("    strip_prefix: v1\n", "clusters.c.strip_prefix"),
        ("    add_prefix: \"/a b\"\n", "clusters.c.add_prefix"),
        (
            "    api_keys: { keys: [k], strip_headers: [\"bad header\"] }\n",
            "clusters.c.api_keys.strip_headers[0]",
        ),
    ];
    for (extra, path) in cases {
        let inv = bad(&one(
            &format!("    peers: [{{ addr: \"10.0.0.1:443\" }}]\n{extra}"),
            "",
        ));
        assert_eq!(inv.path, path, "{extra}: {inv}");
    }
}

#[test]
fn resolver_servers_and_timeout() {
    let peers = "    peers: [{ addr: \"m.svc:80\" }]\n";
    let c = parse(
        &one(
            peers,
            "resolver: { servers: [\"10.96.0.10\", \"127.0.0.1:5353\"], timeout: 2s }\n",
        ),
        "t",
    )
    .unwrap();
    assert_eq!(
        c.resolver.servers,
        [
            "10.96.0.10:53".parse().unwrap(),
            "127.0.0.1:5353".parse::<std::net::SocketAddr>().unwrap()
        ]
    );
    assert_eq!(c.resolver.timeout, Duration::from_secs(2));
    let inv = bad(&one(peers, "resolver: { servers: [\"dns.local\"] }\n"));
    assert_eq!(
        (inv.path.as_str(), inv.line),
        ("resolver.servers[0]", Some(2)),
        "{inv}"
    );
    let inv = bad(&one(peers, "resolver: { timeout: 0s }\n"));
    assert_eq!(inv.path, "resolver.timeout", "{inv}");
}
