//! `balance: prefix_affinity`, its `affinity` and the `load_report` of a cluster.

use super::*;

#[test]
fn affinity_and_load_report_defaults_and_values() {
    let c = parse(GOOD, "good.yaml").unwrap();
    assert_eq!(c.clusters[0].affinity, AffinityConfig::default());
    assert_eq!(c.clusters[0].affinity.prefix_bytes, 2048);
    assert_eq!(c.clusters[0].affinity.load_factor, 1.25);
    assert_eq!(c.clusters[0].load_report, None);
    let text = GOOD.replacen(
        "balance: least_inflight",
        "balance: prefix_affinity\n    affinity: { key: \"header:x-session\", prefix_bytes: 4KiB, load_factor: 1.5 }\n    load_report: { path: /stats, interval: 2s, max_waiting: 8 }",
        1,
    );
    let c = parse(&text, "good.yaml").unwrap();
    let p = &c.clusters[0];
    assert_eq!(p.balance, Balance::PrefixAffinity);
    assert_eq!(
        p.affinity.key,
        AffinityKey::Header(http::HeaderName::from_static("x-session"))
    );
    assert_eq!(
        (p.affinity.prefix_bytes, p.affinity.load_factor),
        (4096, 1.5)
    );
    let r = p.load_report.as_ref().unwrap();
    assert_eq!(r.path, "/stats");
    assert_eq!(r.interval, Duration::from_secs(2));
    assert_eq!((r.max_waiting, r.max_kv_usage), (Some(8), 0.99));
    let d = parse(
        &GOOD.replacen("balance: least_inflight", "load_report: {}", 1),
        "good.yaml",
    )
    .unwrap();
    assert_eq!(d.clusters[0].load_report, Some(LoadReportConfig::default()));
}

#[test]
fn bad_affinity_and_load_report_name_the_key() {
    let cases: &[(&str, &str)] = &[
        ("affinity: { key: prompt }", "clusters.primary.affinity"),
        (
            "balance: prefix_affinity\n    affinity: { key: body }",
            "clusters.primary.affinity.key",
        ),
        (
            "balance: prefix_affinity\n    affinity: { key: \"header:bad header\" }",
            "clusters.primary.affinity.key",
        ),
        (
            "balance: prefix_affinity\n    affinity: { load_factor: 0.5 }",
            "clusters.primary.affinity.load_factor",
        ),
        (
            "balance: prefix_affinity\n    affinity: { prefix_bytes: 0 }",
            "clusters.primary.affinity.prefix_bytes",
        ),
        (
            "load_report: { path: metrics }",
            "clusters.primary.load_report.path",
        ),
        (
            "load_report: { interval: 0s }",
            "clusters.primary.load_report.interval",
        ),
        (
            "load_report: { max_kv_usage: 1.5 }",
            "clusters.primary.load_report.max_kv_usage",
        ),
        ("load_report: { every: 1s }", "clusters.primary.load_report"),
    ];
    for (block, path) in cases {
        let inv = bad(&GOOD.replacen("balance: least_inflight", block, 1));
        assert!(inv.path.starts_with(path), "for {block:?}: {inv}");
        assert!(inv.line.is_some(), "for {block:?}: {inv}");
    }
}
