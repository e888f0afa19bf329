use super::*;
use pingora::protocols::l4::stream::Stream as L4;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// A connection whose peer sends `pieces` (pausing between them) and then closes, unless
/// `keep_open`.
async fn peer_sends(
    pieces: Vec<&'static [u8]>,
    keep_open: bool,
) -> (Stream, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        for p in pieces {
            s.write_all(p).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if keep_open {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    });
    let client = TcpStream::connect(addr).await.unwrap();
    (Box::new(L4::from(client)), server)
}

/// The body read to its end, as pieces.
async fn body(r: &mut Response) -> Result<Vec<Bytes>> {
    let mut out = Vec::new();
    while let Some(b) = r.read_body_bytes().await? {
        assert!(!b.is_empty());
        out.push(b);
    }
    Ok(out)
}

fn concat(pieces: &[Bytes]) -> Vec<u8> {
    pieces.iter().flat_map(|b| b.to_vec()).collect()
}

#[tokio::test]
async fn length_body_in_the_same_read_as_the_head_is_reusable() {
    let (conn, _s) = peer_sends(
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"],
        true,
    )
    .await;
    let mut r = Response::new(conn, false);
    r.read_response().await.unwrap();
    let h = r.take_header().unwrap();
    assert_eq!(h.status, 200);
    assert_eq!(h.headers["x-a"], "1");
    assert!(!h.has_case());
    assert!(!r.is_body_done());
    let b = r.read_body_bytes().await.unwrap().unwrap();
    assert_eq!(&b[..], b"hello");
    assert!(r.is_body_done(), "done with the last piece");
    assert!(r.read_body_bytes().await.unwrap().is_none());
    assert!(r.reuse().is_some());
}

#[tokio::test]
async fn chunked_body_across_reads_with_the_end_seen_early() {
    let (conn, _s) = peer_sends(
        vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
            b"lo\r\n",
            b"3\r\n ab\r\n2\r\ncd\r\n0\r\n\r\n",
        ],
        true,
    )
    .await;
    let mut r = Response::new(conn, false);
    r.read_response().await.unwrap();
    let pieces = body(&mut r).await.unwrap();
    assert_eq!(concat(&pieces), b"hello abcd");
    // The last two chunks and the end arrived together: handed out as one piece.
    assert_eq!(&pieces.last().unwrap()[..], b" abcd");
    assert!(r.reuse().is_some());
}

#[tokio::test]
async fn close_delimited_body_ends_with_the_connection_and_is_not_reused() {
    let (conn, _s) = peer_sends(vec![b"HTTP/1.1 200 OK\r\n\r\nall of ", b"it"], false).await;
    let mut r = Response::new(conn, false);
    r.read_response().await.unwrap();
    assert_eq!(concat(&body(&mut r).await.unwrap()), b"all of it");
    assert!(r.is_body_done());
    assert!(r.reuse().is_none());
}

#[tokio::test]
async fn no_body_for_head_204_304_and_1xx_is_skipped() {
    let (conn, _s) = peer_sends(
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"],
        true,
    )
    .await;
    let mut r = Response::new(conn, true);
    r.read_response().await.unwrap();
    assert!(r.is_body_done());
    assert!(r.read_body_bytes().await.unwrap().is_none());
    assert!(r.reuse().is_some());

    let (conn, _s) = peer_sends(
        vec![b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"],
        true,
    )
    .await;
    let mut r = Response::new(conn, false);
    r.read_response().await.unwrap();
    assert_eq!(r.resp_header().unwrap().status, 100);
    r.read_response().await.unwrap();
    assert_eq!(r.resp_header().unwrap().status, 204);
    assert!(r.is_body_done());
}

#[tokio::test]
async fn what_forbids_reuse() {
    for wire in [
        &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..],
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ] {
        let (conn, _s) = peer_sends(vec![wire], true).await;
        let mut r = Response::new(conn, false);
        r.read_response().await.unwrap();
        assert_eq!(concat(&body(&mut r).await.unwrap()), b"ok");
        assert!(r.reuse().is_none(), "{}", String::from_utf8_lossy(wire));
    }
    // HTTP/1.0 with keep-alive may be reused.
    let (conn, _s) = peer_sends(
        vec![b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok"],
        true,
    )
    .await;
    let mut r = Response::new(conn, false);
    r.read_response().await.unwrap();
    body(&mut r).await.unwrap();
    assert!(r.reuse().is_some());
}

#[tokio::test]
async fn broken_answers_are_errors() {
    for wire in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"[..],
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"NOT HTTP\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ] {
        let (conn, _s) = peer_sends(vec![wire], true).await;
        let mut r = Response::new(conn, false);
        let e = r.read_response().await.unwrap_err();
        assert_eq!(
            e.etype(),
            &ErrorType::InvalidHTTPHeader,
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
    // A body cut short, or a broken chunk.
    for wire in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloX",
    ] {
        let (conn, _s) = peer_sends(vec![wire], false).await;
        let mut r = Response::new(conn, false);
        r.read_response().await.unwrap();
        assert!(
            body(&mut r).await.is_err(),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[tokio::test]
async fn a_connection_closed_before_any_byte_is_marked_reused_only() {
    let (conn, _s) = peer_sends(vec![], false).await;
    let mut r = Response::new(conn, false);
    let e = r.read_response().await.unwrap_err();
    assert_eq!(e.retry, RetryType::ReusedOnly);
    assert!(!r.received(), "nothing came");
    let (conn, _s) = peer_sends(vec![b"HTTP/1.1 200"], false).await;
    let mut r = Response::new(conn, false);
    let e = r.read_response().await.unwrap_err();
    assert_ne!(e.retry, RetryType::ReusedOnly);
    assert!(r.received(), "part of a head came: no free retry");
}

#[tokio::test]
async fn a_large_body_grows_the_buffer_and_arrives_whole() {
    static BODY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let body_bytes = BODY.get_or_init(|| {
        let mut v = b"HTTP/1.1 200 OK\r\ncontent-length: 300000\r\n\r\n".to_vec();
        v.extend((0..300_000u32).map(|i| (i % 251) as u8));
        v
    });
    let (conn, _s) = peer_sends(vec![&body_bytes[..]], true).await;
    let mut r = Response::new(conn, false);
    r.read_response().await.unwrap();
    let got = concat(&body(&mut r).await.unwrap());
    assert_eq!(got.len(), 300_000);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
}

/// The last chunk arrives alone, after the last data was handed out: the body ends there, not
/// with an error when the peer then closes (tests/relay.rs saw an error event appended).
#[tokio::test]
async fn an_sse_stream_in_chunks_a_pause_apart_ends_cleanly() {
    let (conn, _s) = peer_sends(
        vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            b"f\r\ndata: {\"n\":1}\n\n\r\n",
            b"b\r\ndata: {\"n\":\r\n",
            b"e\r\n2}\n\ndata: {\"n\"\r\n",
            b"13\r\n:3}\n\ndata: [DONE]\n\n\r\n",
            b"0\r\n\r\n",
        ],
        false,
    )
    .await;
    let mut r = Response::new(conn, false);
    r.read_response().await.unwrap();
    let pieces = match body(&mut r).await {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        concat(&pieces),
        b"data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: {\"n\":3}\n\ndata: [DONE]\n\n"
    );
    assert!(r.is_body_done());
}
