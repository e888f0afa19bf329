//! The process and edge parts of the config: TLS files, access log targets.

use super::*;

#[test]
fn tls_files_are_checked_when_the_config_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let write_pair = |name: &str| {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let (cert, key) = (
            dir.path().join(format!("{name}.crt")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
        (cert, key)
    };
    let (cert, key) = write_pair("a.test");
    let (_, other_key) = write_pair("b.test");
    let listener = |cert: &std::path::Path, key: &std::path::Path| {
        GOOD.replace(
            "  - addr: \"127.0.0.1:8080\"\n",
            &format!(
                "  - addr: \"127.0.0.1:8080\"\n  - addr: \"127.0.0.1:8443\"\n    tls: {{ cert: {}, key: {} }}\n",
                cert.display(),
                key.display()
            ),
        )
    };
    let c = parse(&listener(&cert, &key), "x").unwrap();
    assert_eq!(c.listeners[1].tls.as_ref().unwrap().cert, cert);

    let missing = dir.path().join("missing.crt");
    let inv = bad(&listener(&missing, &key));
    assert_eq!(
        (inv.path.as_str(), inv.line),
        ("listeners[1].tls.cert", Some(7)),
        "{inv}"
    );
    assert!(inv.message.contains("missing.crt"), "{inv}");
    let inv = bad(&listener(&cert, &other_key));
    assert_eq!(inv.path, "listeners[1].tls.key", "{inv}");
    assert!(inv.message.contains("does not belong"), "{inv}");
    let inv = bad(&listener(&key, &key));
    assert_eq!(inv.path, "listeners[1].tls.cert", "{inv}");
}

#[test]
fn access_log_targets() {
    let c = parse(&with("access_log: { path: stderr }\n"), "x").unwrap();
    assert_eq!(c.access_log, Some(AccessLogConfig::Stderr));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("access.log");
    let c = parse(
        &with(&format!("access_log: {{ path: {} }}\n", p.display())),
        "x",
    )
    .unwrap();
    assert_eq!(c.access_log, Some(AccessLogConfig::File(p)));
    // check does not create the file, but its directory must exist.
    assert!(!dir.path().join("access.log").exists());
    let inv = bad(&with("access_log: { path: /nonexistent/dir/access.log }\n"));
    assert_eq!(
        (inv.path.as_str(), inv.line),
        ("access_log.path", Some(32)),
        "{inv}"
    );
    let inv = bad(&with(&format!(
        "access_log: {{ path: {} }}\n",
        dir.path().display()
    )));
    assert_eq!(inv.path, "access_log.path", "{inv}");
}
