use super::request::{parse, Refusal};
use super::response::head;
use crate::wire::Framing;
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;

fn req(text: &str) -> Result<super::request::Request, Refusal> {
    parse(&Bytes::copy_from_slice(text.as_bytes()))
}

fn status(text: &str) -> u16 {
    match req(text) {
        Ok(_) => 0,
        Err(r) => r.status,
    }
}

#[test]
fn a_plain_request_is_parsed_without_the_case_map() {
    let r = req(
        "POST /v1/chat?x=1 HTTP/1.1\r\nHost: a.test\r\nContent-Length: 12\r\nX-Custom: v\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.header.method, http::Method::POST);
    assert_eq!(r.header.uri.path(), "/v1/chat");
    assert_eq!(r.header.uri.query(), Some("x=1"));
    assert_eq!(r.header.headers["x-custom"], "v");
    assert!(!r.header.has_case());
    assert_eq!(r.framing, Framing::Length(12));
    assert!(r.persistent && !r.http10 && !r.expect_continue);
}

#[test]
fn keep_alive_by_version_and_connection() {
    assert!(
        !req("GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .unwrap()
            .persistent
    );
    let r = req("GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(r.http10 && !r.persistent);
    assert!(
        req("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
            .unwrap()
            .persistent
    );
}

#[test]
fn framing_refusals_smuggling_and_codings() {
    // Both framings at once: the coding decides, the length is dropped, and the connection
    // closes after the answer.
    let r = req(
        "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.framing, Framing::Chunked);
    assert!(!r.persistent, "an ambiguous request ends its connection");
    assert!(!r.header.headers.contains_key("content-length"));
    assert_eq!(
        status("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n"),
        400
    );
    assert_eq!(
        status("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: -3\r\n\r\n"),
        400
    );
    assert_eq!(
        status("POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n"),
        501
    );
    assert_eq!(
        status("POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked, gzip\r\n\r\n"),
        400
    );
    assert_eq!(
        status("POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n"),
        400
    );
    let r = req("POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
    assert_eq!(r.framing, Framing::Chunked);
    // Identical repeated lengths are one length.
    let r = req("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3, 3\r\n\r\n").unwrap();
    assert_eq!(r.framing, Framing::Length(3));
}

#[test]
fn malformed_heads_and_hosts() {
    for bad in [
        "GET / HTTP/1.1\r\nhost : a\r\n\r\n", // space before the colon
        "GET / HTTP/1.1\r\nhost: a\r\n folded\r\n\r\n", // obsolete line folding
        "GET / HTTP/1.1\r\n\x01: a\r\n\r\n",
        "GET / HTTP/1.1\r\nx: a\x00b\r\n\r\n",
        "GET  / HTTP/1.1\r\nhost: a\r\n\r\n",
        "GET / HTTP/1.2x\r\nhost: a\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n", // HTTP/1.1 without host
        "GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", // two hosts
        "GET http://a.test/x HTTP/1.1\r\nhost: b.test\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: user@a\r\n\r\n",
    ] {
        assert_eq!(status(bad), 400, "{bad:?}");
    }
    assert_eq!(status("CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n"), 405);
    // HTTP/1.0 needs no host; absolute form with a matching host is fine.
    assert_eq!(status("GET / HTTP/1.0\r\n\r\n"), 0);
    let r = req("GET http://a.test/x?q HTTP/1.1\r\nhost: a.test\r\n\r\n").unwrap();
    assert_eq!(r.header.uri.path(), "/x");
}

#[test]
fn too_many_fields_is_431() {
    let mut text = String::from("GET / HTTP/1.1\r\nhost: a\r\n");
    for i in 0..300 {
        text.push_str(&format!("x-{i}: v\r\n"));
    }
    text.push_str("\r\n");
    assert_eq!(status(&text), 431);
}

#[test]
fn expect_continue_only_for_http11() {
    let r = req("POST / HTTP/1.1\r\nhost: a\r\nexpect: 100-Continue\r\ncontent-length: 5\r\n\r\n")
        .unwrap();
    assert!(r.expect_continue);
    let r = req("POST / HTTP/1.0\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n").unwrap();
    assert!(!r.expect_continue);
}

fn resp(status: u16, fields: &[(&str, &str)]) -> ResponseHeader {
    let mut h = ResponseHeader::build_no_case(status, None).unwrap();
    for (k, v) in fields {
        h.append_header(k.to_string(), *v).unwrap();
    }
    h
}

fn wire(h: &ResponseHeader, http10: bool, head_req: bool, close: bool) -> (String, Framing, bool) {
    let mut out = BytesMut::new();
    let mut r = head(h, http10, head_req, close, &mut out);
    let bytes = r.take_head().unwrap();
    (
        String::from_utf8(bytes.to_vec()).unwrap(),
        r.framing,
        r.close,
    )
}

#[test]
fn response_heads_frame_the_body() {
    let h = resp(
        200,
        &[
            ("content-length", "5"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
        ],
    );
    let (text, framing, close) = wire(&h, false, false, false);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("content-length: 5\r\n") && text.contains("\r\ndate: "),
        "{text}"
    );
    assert!(
        !text.contains("keep-alive") && !text.contains("connection"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\n"));
    assert_eq!((framing, close), (Framing::Length(5), false));

    // No length: chunked for HTTP/1.1, the close for HTTP/1.0 (which gets no transfer coding).
    let h = resp(200, &[("content-type", "text/event-stream")]);
    let (text, framing, _) = wire(&h, false, false, false);
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert_eq!(framing, Framing::Chunked);
    let h = resp(200, &[("transfer-encoding", "chunked")]);
    let (text, framing, close) = wire(&h, true, false, false);
    assert!(
        !text.contains("transfer-encoding") && text.contains("connection: close\r\n"),
        "{text}"
    );
    assert_eq!((framing, close), (Framing::Close, true));

    // A chunked upstream answer is chunked again, once.
    let (text, framing, _) = wire(&h, false, false, false);
    assert_eq!(text.matches("transfer-encoding").count(), 1, "{text}");
    assert_eq!(framing, Framing::Chunked);

    // HEAD, 204 and 304 have no body; 204 says nothing of a length.
    let h = resp(200, &[("content-length", "5")]);
    let (text, framing, _) = wire(&h, false, true, false);
    assert!(text.contains("content-length: 5"));
    assert_eq!(framing, Framing::Empty);
    let h = resp(
        204,
        &[("content-length", "0"), ("transfer-encoding", "chunked")],
    );
    let (text, framing, _) = wire(&h, false, false, false);
    assert!(
        !text.contains("content-length") && !text.contains("transfer-encoding"),
        "{text}"
    );
    assert_eq!(framing, Framing::Empty);

    // HTTP/1.0 keep-alive is said; a closing connection is said.
    let h = resp(404, &[("content-length", "0")]);
    assert!(wire(&h, true, false, false)
        .0
        .contains("connection: keep-alive\r\n"));
    assert!(wire(&h, false, false, true)
        .0
        .contains("connection: close\r\n"));
}

#[test]
fn a_custom_reason_phrase_is_kept() {
    let mut h = resp(299, &[("content-length", "0")]);
    h.set_reason_phrase(Some("Fine")).unwrap();
    assert!(wire(&h, false, false, false)
        .0
        .starts_with("HTTP/1.1 299 Fine\r\n"));
}

/// A loopback pair: the server side as a Pingora stream, the client side as tokio's.
async fn pair() -> (pingora::protocols::Stream, tokio::net::TcpStream) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = l.accept().await.unwrap();
    let server: pingora::protocols::l4::stream::Stream = server.into();
    (Box::new(server), client)
}

#[tokio::test]
async fn an_empty_buffer_is_read_through_the_scratch_and_holds_only_what_came() {
    use super::conn::{read_into, READ_SIZE};
    use tokio::io::AsyncWriteExt;
    let (mut server, mut client) = pair().await;
    let head = b"GET /v1/models HTTP/1.1\r\nhost: a\r\n\r\n";
    client.write_all(head).await.unwrap();
    let mut buf = BytesMut::new();
    let n = read_into(&mut server, &mut buf).await.unwrap();
    assert_eq!(n, head.len());
    assert_eq!(&buf[..], &head[..]);
    // Only the bytes that came, not a read buffer of READ_SIZE.
    assert!(buf.capacity() < READ_SIZE, "capacity {}", buf.capacity());

    // A buffer holding part of a head is read into directly, after what it holds.
    client.write_all(b"rest").await.unwrap();
    let n = read_into(&mut server, &mut buf).await.unwrap();
    assert_eq!(n, 4);
    assert!(buf.ends_with(b"\r\n\r\nrest"));

    // The peer closing reads as 0 bytes on an empty buffer too.
    drop(client);
    let mut empty = BytesMut::new();
    assert_eq!(read_into(&mut server, &mut empty).await.unwrap(), 0);
    assert!(empty.is_empty());
}
