use super::chunked::{size_line, ChunkError, Decoded, Decoder};
use super::*;
use bytes::{Bytes, BytesMut};
use http::HeaderValue;

fn headers(fields: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in fields {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn content_length_accepts_identical_repeats_only() {
    let cl = |f: &[(&str, &str)]| content_length(&headers(f));
    assert_eq!(cl(&[]), Ok(None));
    assert_eq!(cl(&[("content-length", "42")]), Ok(Some(42)));
    assert_eq!(cl(&[("content-length", " 7 ")]), Ok(Some(7)));
    assert_eq!(cl(&[("content-length", "5, 5")]), Ok(Some(5)));
    assert_eq!(
        cl(&[("content-length", "5"), ("content-length", "5")]),
        Ok(Some(5))
    );
    for bad in [
        &[("content-length", "5"), ("content-length", "6")][..],
        &[("content-length", "5, 6")],
        &[("content-length", "+5")],
        &[("content-length", "-1")],
        &[("content-length", "0x10")],
        &[("content-length", "")],
        &[("content-length", "1 2")],
        &[("content-length", "99999999999999999999")],
    ] {
        assert_eq!(cl(bad), Err(FramingError::BadContentLength), "{bad:?}");
    }
}

#[test]
fn request_framing_follows_rfc_9112() {
    let f = |fields: &[(&str, &str)], http10| request_framing(&headers(fields), http10);
    assert_eq!(f(&[], false), Ok(Framing::Empty));
    assert_eq!(f(&[("content-length", "0")], false), Ok(Framing::Empty));
    assert_eq!(f(&[("content-length", "3")], true), Ok(Framing::Length(3)));
    assert_eq!(
        f(&[("transfer-encoding", "chunked")], false),
        Ok(Framing::Chunked)
    );
    assert_eq!(
        f(&[("transfer-encoding", "Chunked")], false),
        Ok(Framing::Chunked)
    );
    assert_eq!(
        f(
            &[("transfer-encoding", "chunked"), ("content-length", "3")],
            false
        ),
        Ok(Framing::Chunked),
        "the coding overrides the length"
    );
    assert_eq!(
        f(&[("transfer-encoding", "chunked")], true),
        Err(FramingError::CodingOnHttp10)
    );
    assert_eq!(
        f(&[("transfer-encoding", "gzip, chunked")], false),
        Err(FramingError::UnsupportedCoding)
    );
    for bad in [
        "gzip",
        "chunked, gzip",
        "chunked, chunked",
        "",
        "chunked;q=1",
    ] {
        assert_eq!(
            f(&[("transfer-encoding", bad)], false),
            Err(FramingError::BadTransferEncoding),
            "{bad:?}"
        );
    }
    assert_eq!(
        f(
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked")
            ],
            false
        ),
        Err(FramingError::BadTransferEncoding)
    );
}

#[test]
fn response_framing_follows_rfc_9112() {
    let f =
        |status, fields: &[(&str, &str)], head| response_framing(status, &headers(fields), head);
    assert_eq!(
        f(200, &[("content-length", "9")], true),
        Ok((Framing::Empty, false))
    );
    for s in [100, 204, 304] {
        assert_eq!(
            f(s, &[("content-length", "9")], false),
            Ok((Framing::Empty, false))
        );
    }
    assert_eq!(
        f(200, &[("content-length", "9")], false),
        Ok((Framing::Length(9), false))
    );
    assert_eq!(f(200, &[], false), Ok((Framing::Close, true)));
    assert_eq!(
        f(200, &[("transfer-encoding", "chunked")], false),
        Ok((Framing::Chunked, false))
    );
    assert_eq!(
        f(
            200,
            &[("transfer-encoding", "chunked"), ("content-length", "9")],
            false
        ),
        Ok((Framing::Chunked, true))
    );
    assert_eq!(
        f(200, &[("transfer-encoding", "gzip")], false),
        Ok((Framing::Close, true))
    );
    assert_eq!(
        f(200, &[("content-length", "1, 2")], false),
        Err(FramingError::BadContentLength)
    );
}

#[test]
fn persistence_by_version_and_connection() {
    assert!(persistent(&headers(&[]), false));
    assert!(!persistent(&headers(&[]), true));
    assert!(!persistent(&headers(&[("connection", "close")]), false));
    assert!(!persistent(
        &headers(&[("connection", "Upgrade, Close")]),
        false
    ));
    assert!(persistent(&headers(&[("connection", "keep-alive")]), true));
    assert!(!persistent(
        &headers(&[("connection", "keep-alive, close")]),
        true
    ));
}

#[test]
fn head_end_finds_crlf_and_bare_lf_endings_once() {
    assert_eq!(
        head_end(b"GET / HTTP/1.1\r\nhost: x\r\n\r\nbody", 0),
        Some(27)
    );
    assert_eq!(head_end(b"GET / HTTP/1.1\nhost: x\n\nbody", 0), Some(24));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nhost: x\r\n", 0), None);
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nhost: x\r\n\r", 0), None);
    // Resumed where the last search stopped: the end straddles the two reads.
    let whole = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    for split in 1..whole.len() {
        assert_eq!(head_end(&whole[..split], 0), None, "{split}");
        assert_eq!(head_end(whole, split), Some(whole.len()), "{split}");
    }
    assert_eq!(leading_empty_lines(b"\r\n\nGET"), 3);
    assert_eq!(leading_empty_lines(b"GET"), 0);
    assert_eq!(leading_empty_lines(b"\r"), 0);
}

#[test]
fn fields_share_the_head_buffer() {
    let head = Bytes::from_static(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: abcdef\r\n\r\n");
    let mut fields = [httparse::EMPTY_HEADER; 4];
    let mut req = httparse::Request::new(&mut fields);
    assert!(req.parse(&head).unwrap().is_complete());
    let map = build_headers(req.headers, &head).unwrap();
    assert_eq!(map["host"], "x");
    assert_eq!(map["x-long"].as_bytes().as_ptr(), head[33..].as_ptr());
}

/// Decode `pieces` fed one after another; the body, or the first error.
fn decode_all(pieces: &[&[u8]]) -> Result<(Vec<u8>, bool), ChunkError> {
    let mut d = Decoder::new();
    let mut input = BytesMut::new();
    let mut body = Vec::new();
    for p in pieces {
        input.extend_from_slice(p);
        loop {
            match d.decode(&mut input)? {
                Decoded::Data(b) => {
                    assert!(!b.is_empty());
                    body.extend_from_slice(&b)
                }
                Decoded::More => break,
                Decoded::End => return Ok((body, true)),
            }
        }
    }
    Ok((body, false))
}

#[test]
fn chunked_decodes_whatever_the_pieces() {
    let wire = b"5\r\nhello\r\nb;name=value\r\n world, and\r\n0\r\nx-trailer: 1\r\n\r\n";
    assert_eq!(
        decode_all(&[wire]),
        Ok((b"hello world, and".to_vec(), true))
    );
    for split in 1..wire.len() {
        let (a, b) = wire.split_at(split);
        assert_eq!(
            decode_all(&[a, b]),
            Ok((b"hello world, and".to_vec(), true)),
            "split at {split}"
        );
    }
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(decode_all(&bytes), Ok((b"hello world, and".to_vec(), true)));
    // Upper-case hex and extensions after whitespace.
    assert_eq!(
        decode_all(&[b"A \t;ext\r\n0123456789\r\n0\r\n\r\n"]),
        Ok((b"0123456789".to_vec(), true))
    );
    // Bytes after the end stay in the input for the next message.
    let mut d = Decoder::new();
    let mut input = BytesMut::from(&b"0\r\n\r\nGET /"[..]);
    assert_eq!(d.decode(&mut input), Ok(Decoded::End));
    assert!(d.is_done());
    assert_eq!(&input[..], b"GET /");
}

#[test]
fn chunked_refuses_what_smuggling_relies_on() {
    for (bad, why) in [
        (&b"5\nhello\r\n0\r\n\r\n"[..], ChunkError::MissingCrlf),
        (b"5\r\nhelloXX0\r\n\r\n", ChunkError::MissingCrlf),
        (b"5\r\nhello\n0\r\n\r\n", ChunkError::MissingCrlf),
        (b"\r\n", ChunkError::Size),
        (b"-5\r\nhello\r\n", ChunkError::Size),
        (b"0x5\r\nhello\r\n", ChunkError::Size),
        (b"5 5\r\nhello\r\n", ChunkError::Size),
        (b"5 \r\nhello\r\n", ChunkError::Size),
        (b"5;a\x01b\r\nhello\r\n", ChunkError::Size),
        (b"10000000000000000\r\n", ChunkError::Size),
        (b"0\r\nx: 1\n\r\n", ChunkError::MissingCrlf),
    ] {
        assert_eq!(
            decode_all(&[bad]),
            Err(why),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let long = format!("5;{}\r\nhello\r\n", "a".repeat(5000));
    assert_eq!(decode_all(&[long.as_bytes()]), Err(ChunkError::LineTooLong));
    let no_end = "a".repeat(5000);
    assert_eq!(
        decode_all(&[no_end.as_bytes()]),
        Err(ChunkError::LineTooLong)
    );
    let no_lf = format!("5{}", ";".repeat(5000));
    assert_eq!(
        decode_all(&[no_lf.as_bytes()]),
        Err(ChunkError::LineTooLong)
    );
    let trailers = format!("0\r\n{}", "x: 1\r\n".repeat(4000));
    assert_eq!(
        decode_all(&[trailers.as_bytes()]),
        Err(ChunkError::TrailersTooLarge)
    );
    // The largest size that fits is accepted (and simply waits for its data).
    assert_eq!(
        decode_all(&[b"ffffffffffffffff\r\nabc"]),
        Ok((b"abc".to_vec(), false))
    );
}

#[test]
fn size_lines() {
    let mut buf = [0u8; 18];
    assert_eq!(size_line(0, &mut buf), b"0\r\n");
    assert_eq!(size_line(255, &mut buf), b"ff\r\n");
    assert_eq!(size_line(0x1234, &mut buf), b"1234\r\n");
    assert_eq!(size_line(usize::MAX, &mut buf), b"ffffffffffffffff\r\n");
}
