use super::*;
use pingora::http::ResponseHeader;

#[test]
fn answers_are_framed_for_the_client() {
    let up = || {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("transfer-encoding", "chunked").unwrap();
        h.insert_header("connection", "keep-alive, x-hop").unwrap();
        h.insert_header("x-hop", "1").unwrap();
        h.insert_header("upgrade", "h2c").unwrap();
        h.insert_header("content-type", "text/event-stream")
            .unwrap();
        h
    };
    let mut h = up();
    for_client(&mut h, http::Version::HTTP_11);
    let mut names: Vec<_> = h.headers.keys().map(|k| k.as_str().to_string()).collect();
    names.sort();
    assert_eq!(names, ["content-type", "transfer-encoding"]);
    let mut h = up();
    for_client(&mut h, http::Version::HTTP_10);
    assert!(
        h.headers.get("transfer-encoding").is_none(),
        "HTTP/1.0: close-delimited"
    );
}
