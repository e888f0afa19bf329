//! The upstream head writer against the Pingora serialiser it replaced (the same bytes), and
//! what it must never write.

use super::*;
use http::HeaderValue;
use pingora::http::RequestHeader;

const GOOD_TP: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn origin<'a>(path: &'a str, peer: Option<&str>, trusted: bool, tp: bool) -> Origin<'a> {
    let peer = peer.map(|p| p.parse().unwrap());
    Origin {
        path,
        body_len: 42,
        request_id: "rid-1",
        identity: Identity {
            peer,
            client: peer,
            trusted,
        },
        traceparent: tp.then_some(GOOD_TP),
    }
}

fn map(fields: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in fields {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    h
}

/// The head as the code before this writer built it: a Pingora `RequestHeader`, serialised.
fn reference(
    method: &Method,
    h: &HeaderMap,
    auth: Option<&str>,
    tls: bool,
    o: &Origin<'_>,
) -> Vec<u8> {
    let mut up =
        RequestHeader::build(method.clone(), o.path.as_bytes(), Some(h.len() + 4)).unwrap();
    let named = crate::hop::connection_named(h);
    for (name, value) in h.iter() {
        if !dropped(name, &named, o.identity.trusted) {
            up.append_header(name.clone(), value.clone()).unwrap();
        }
    }
    if up.headers.get(header::HOST).is_none() {
        if let Some(a) = auth {
            up.insert_header(header::HOST, a).unwrap();
        }
    }
    if o.body_len > 0 || method == Method::POST || method == Method::PUT {
        up.insert_header(header::CONTENT_LENGTH, o.body_len.to_string())
            .unwrap();
    }
    up.insert_header("x-request-id", o.request_id).unwrap();
    let proto = if tls { "https" } else { "http" };
    if let Some(peer) = o.identity.peer {
        let join = |name: &str, add: String| {
            let prev: Vec<&str> = (up.headers.get_all(name).iter())
                .filter_map(|v| v.to_str().ok())
                .collect();
            if prev.is_empty() {
                add
            } else {
                format!("{}, {add}", prev.join(", "))
            }
        };
        let xff = join("x-forwarded-for", peer.to_string());
        let fwd = join(
            "forwarded",
            format!(
                "for={};proto={proto}",
                super::super::identity::forwarded_node(peer)
            ),
        );
        up.insert_header("x-forwarded-for", xff).unwrap();
        up.insert_header("forwarded", fwd).unwrap();
    }
    if !o.identity.trusted || up.headers.get("x-forwarded-proto").is_none() {
        up.insert_header("x-forwarded-proto", proto).unwrap();
    }
    if let Some(t) = o.traceparent {
        up.insert_header("traceparent", t).unwrap();
    }
    crate::upstream::wire(&up).unwrap().to_vec()
}

fn written(
    method: &Method,
    h: &HeaderMap,
    auth: Option<&str>,
    tls: bool,
    o: &Origin<'_>,
) -> Vec<u8> {
    let auth: Option<http::uri::Authority> = auth.map(|a| a.parse().unwrap());
    write_head(method, h, auth.as_ref(), tls, o)
        .unwrap()
        .to_vec()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A method, the client's fields, and the request target's authority.
type Case = (
    Method,
    Vec<(&'static str, &'static str)>,
    Option<&'static str>,
);

#[test]
fn the_same_bytes_as_the_pingora_serialiser() {
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            vec![
                ("host", "api.example"),
                ("content-type", "application/json"),
                ("accept", "*/*"),
            ],
            None,
        ),
        (
            Method::GET,
            vec![
                ("Accept", "a"),
                ("X-Custom", "1"),
                ("x-custom", "2"),
                ("cache-control", "no-cache"),
            ],
            Some("h.example:8080"),
        ),
        (
            Method::POST,
            vec![
                ("host", "a"),
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "s"),
                ("te", "trailers"),
                ("transfer-encoding", "chunked"),
                ("content-length", "9"),
                ("expect", "100-continue"),
                ("upgrade", "h2c"),
                ("keep-alive", "5"),
                ("proxy-authorization", "Basic x"),
                ("authorization", "Bearer t"),
            ],
            None,
        ),
        (
            Method::POST,
            vec![
                ("x-request-id", "client-id"),
                ("host", "a"),
                ("traceparent", "00-zz"),
                ("traceparent", "00-yy"),
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-for", "10.0.0.2, 10.0.0.3"),
                ("forwarded", "for=10.0.0.1"),
                ("x-forwarded-proto", "https"),
                ("x-real-ip", "10.0.0.1"),
                ("accept", "x"),
                ("x-forwarded-for", "10.0.0.4"),
            ],
            None,
        ),
        (
            Method::PUT,
            vec![("x-a", "tab\there"), ("x-b", "obs-text \u{e9}")],
            None,
        ),
        (Method::DELETE, vec![], None),
        (
            Method::POST,
            vec![
                ("connection", "x-forwarded-for, x-request-id, traceparent"),
                ("x-forwarded-for", "10.0.0.9"),
                ("x-request-id", "gone"),
                ("traceparent", "00-gone"),
                ("forwarded", "for=10.0.0.9"),
            ],
            None,
        ),
    ];
    for (method, fields, auth) in &cases {
        let h = map(fields);
        for (peer, trusted, tls, tp) in [
            (Some("192.0.2.7"), false, false, true),
            (Some("192.0.2.7"), true, true, true),
            (Some("2001:db8::1"), true, false, false),
            (Some("2001:db8::1"), false, true, true),
            (None, false, false, false),
            (None, true, false, true),
        ] {
            let o = origin("/v1/chat?x=1", peer, trusted, tp);
            let want = reference(method, &h, *auth, tls, &o);
            let got = written(method, &h, *auth, tls, &o);
            assert_eq!(
                text(&got),
                text(&want),
                "{method} {fields:?} {peer:?} trusted {trusted}"
            );
        }
    }
}

#[test]
fn order_kept_and_exclusions() {
    let h = map(&[
        ("x-z", "1"),
        ("connection", "x-drop"),
        ("x-drop", "no"),
        ("x-a", "2"),
        ("x-request-id", "theirs"),
        ("x-z", "3"),
        ("authorization", "Bearer t"),
    ]);
    let o = origin("/p", Some("192.0.2.7"), false, true);
    let got = text(&written(&Method::POST, &h, None, false, &o));
    let want = "POST /p HTTP/1.1\r\nx-z: 1\r\nx-z: 3\r\nx-a: 2\r\nx-request-id: rid-1\r\n\
                authorization: Bearer t\r\nContent-Length: 42\r\nx-forwarded-for: 192.0.2.7\r\n\
                forwarded: for=192.0.2.7;proto=http\r\nx-forwarded-proto: http\r\n\
                traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";
    assert_eq!(got, want);
}

#[test]
fn no_line_is_ever_split_or_folded() {
    let h = map(&[
        ("x-a", " leading space"),
        ("x-b", "\ttab first"),
        ("x-c", "high \u{ff} bytes"),
        ("x-d", ""),
    ]);
    let o = origin("/p", Some("192.0.2.7"), true, true);
    let got = written(&Method::GET, &h, Some("h"), true, &o);
    let lines = got.strip_suffix(b"\r\n\r\n").unwrap();
    for l in lines.split_inclusive(|&b| b == b'\n') {
        let l = l.strip_suffix(b"\r\n").unwrap_or(l);
        assert!(
            !l.contains(&b'\r') && !l.contains(&b'\n') && !l.contains(&0),
            "{:?}",
            text(l)
        );
        assert!(
            !l.starts_with(b" ") && !l.starts_with(b"\t"),
            "folded: {:?}",
            text(l)
        );
    }
    for bad in ["/a b", "/a\rb", "/a\nb", "/a\0b"] {
        let o = origin(bad, None, false, false);
        assert!(
            write_head(&Method::GET, &h, None, false, &o).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn ipv4_as_display_writes_it() {
    for ip in [
        "0.0.0.0",
        "1.2.3.4",
        "10.0.200.9",
        "255.255.255.255",
        "192.0.2.17",
    ] {
        let mut out = Vec::new();
        put_ipv4(&mut out, ip.parse().unwrap());
        assert_eq!(&out[..], ip.as_bytes());
    }
}

#[test]
fn numbers_in_decimal() {
    let mut b = [0u8; 20];
    assert_eq!(decimal(0, &mut b), b"0");
    assert_eq!(decimal(1234567, &mut b), b"1234567");
    assert_eq!(
        decimal(usize::MAX, &mut b),
        usize::MAX.to_string().as_bytes()
    );
}
