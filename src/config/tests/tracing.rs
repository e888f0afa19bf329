//! `tracing:`: the OTLP endpoint and the sample ratio.

use super::*;

#[test]
fn tracing_is_off_by_default_and_takes_an_http_endpoint() {
    let c = parse(&with(""), "x").unwrap();
    assert_eq!(c.tracing, TracingConfig::default());
    assert_eq!(c.tracing.otlp_endpoint, None);
    assert_eq!(c.tracing.sample_ratio, 1.0);
    let c = parse(
        &with("tracing: { otlp_endpoint: \"http://127.0.0.1:4318\", sample_ratio: 0.25 }\n"),
        "x",
    )
    .unwrap();
    assert_eq!(
        c.tracing.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4318/v1/traces"),
        "the collector's path when none is given"
    );
    assert_eq!(c.tracing.sample_ratio, 0.25);
    let c = parse(
        &with("tracing: { otlp_endpoint: \"http://otel:4318/custom/traces\" }\n"),
        "x",
    )
    .unwrap();
    assert_eq!(
        c.tracing.otlp_endpoint.as_deref(),
        Some("http://otel:4318/custom/traces")
    );
}

#[test]
fn bad_tracing_values_name_the_key() {
    for (text, key, says) in [
        (
            "tracing: { sample_ratio: 1.5 }\n",
            "tracing.sample_ratio",
            "between 0 and 1",
        ),
        (
            "tracing: { sample_ratio: -0.1 }\n",
            "tracing.sample_ratio",
            "between 0 and 1",
        ),
        (
            "tracing: { otlp_endpoint: \"collector:4318\" }\n",
            "tracing.otlp_endpoint",
            "http://",
        ),
        (
            "tracing: { otlp_endpoint: \"https://c:4318\" }\n",
            "tracing.otlp_endpoint",
            "https is not supported",
        ),
        (
            "tracing: { otlp_endpoint: \"not a url\" }\n",
            "tracing.otlp_endpoint",
            "not a URL",
        ),
        (
            "tracing: { endpoint: \"http://c:4318\" }\n",
            "tracing",
            "unknown field",
        ),
    ] {
        let e = bad(&with(text));
        assert!(e.path.starts_with(key), "{text}: {e:?}");
        assert!(e.message.contains(says), "{text}: {e:?}");
        assert!(e.line.is_some(), "{text}: {e:?}");
    }
}
