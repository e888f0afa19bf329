//! Framing: whole events through any chunking, stops at an event, lost framing, `[DONE]`.

use super::*;

/// Feed `parts` one by one; returns what was forwarded, the event data seen, and the framer.
fn run(parts: &[&str]) -> (String, Vec<String>, Framer) {
    let mut f = Framer::new();
    let mut out = String::new();
    let mut seen = Vec::new();
    for p in parts {
        let fwd = f.push(Bytes::copy_from_slice(p.as_bytes()), |ev| {
            seen.push(String::from_utf8_lossy(&ev.data).into_owned())
        });
        if let Some(b) = fwd {
            out.push_str(std::str::from_utf8(&b).unwrap());
        }
    }
    (out, seen, f)
}

#[test]
fn whole_events_pass_unchanged() {
    let (out, seen, f) = run(&["data: {\"a\":1}\n\n", "data: [DONE]\n\n"]);
    assert_eq!(out, "data: {\"a\":1}\n\ndata: [DONE]\n\n");
    assert_eq!(seen, ["{\"a\":1}", "[DONE]"]);
    assert!(f.done() && f.events() == 2 && f.errors() == 0);
}

#[test]
fn a_split_event_is_held_until_it_ends() {
    let (out, seen, mut f) = run(&["data: {\"choices\":[{\"de", "lta\":1}]}\n", "\ndata: x"]);
    assert_eq!(out, "data: {\"choices\":[{\"delta\":1}]}\n\n");
    assert_eq!(seen, ["{\"choices\":[{\"delta\":1}]}"]);
    assert!(!f.done());
    // A cut now drops the unfinished "data: x"; a normal end hands it over.
    assert_eq!(f.finish().as_deref(), Some(&b"data: x"[..]));
}

#[test]
fn every_line_ending_and_split_points() {
    let text = "event: a\r\ndata: 1\r\ndata: 2\r\n\r\ndata: 3\r\rdata: [DONE]\n\n";
    // Split at every byte position: the result must not depend on chunking.
    for cut in 0..text.len() {
        let (out, seen, f) = run(&[&text[..cut], &text[cut..]]);
        assert_eq!(out, text, "cut at {cut}");
        assert_eq!(seen, ["1\n2", "3", "[DONE]"], "cut at {cut}");
        assert!(f.done());
    }
}

#[test]
fn comments_and_error_events() {
    let (_, seen, f) = run(&[": keep-alive\n\n", "event: error\ndata: {}\n\n"]);
    assert_eq!(seen, ["{}"]);
    assert_eq!((f.events(), f.errors()), (1, 1));
    let (_, _, f) = run(&["data: {\"error\": {\"message\": \"engine died\"}}\n\n"]);
    assert_eq!(f.errors(), 1);
    let (_, _, f) =
        run(&["data: {\"choices\": [{\"delta\": {\"content\": \"\\\"error\\\"\"}}]}\n\n"]);
    assert_eq!(f.errors(), 0, "the word inside content is not an error");
}

#[test]
fn done_is_an_event_not_a_tail() {
    assert!(completed_cleanly(b"data: {}\n\ndata: [DONE]\n\n"));
    assert!(
        !completed_cleanly(b"data: {}\n\ndata: [DONE]"),
        "unterminated"
    );
    assert!(!completed_cleanly(b"data: x [DONE]\n\n"));
    assert!(!completed_cleanly(
        b"data: {\"error\":{}}\n\ndata: [DONE]\n\n"
    ));
    assert!(!completed_cleanly(b""));
}

#[test]
fn a_stop_forwards_only_the_events_before_it() {
    let text = "data: 1\n\ndata: {\"error\":{}}\n\ndata: [DONE]\n\n";
    for cut in 0..text.len() {
        let mut f = Framer::new();
        let (mut out, mut stops) = (String::new(), 0);
        for part in [&text[..cut], &text[cut..]] {
            if stops > 0 {
                break;
            }
            let (fwd, stop) =
                f.push_until(Bytes::copy_from_slice(part.as_bytes()), |e| !e.is_error());
            out.push_str(std::str::from_utf8(fwd.as_deref().unwrap_or_default()).unwrap());
            stops += usize::from(stop);
        }
        assert_eq!((out.as_str(), stops), ("data: 1\n\n", 1), "cut at {cut}");
    }
}

#[test]
fn a_huge_event_gives_up_framing_and_loses_nothing() {
    let big = "x".repeat(MAX_PENDING + 10);
    let first = format!("data: {big}");
    let (out, _, f) = run(&["data: 1\n\n", &first, "\n\ndata: 2\n\n"]);
    assert_eq!(out, format!("data: 1\n\n{first}\n\ndata: 2\n\n"));
    assert!(!f.at_boundary());
}

#[test]
fn dropped_events_are_left_out_wherever_the_chunks_end() {
    let text = "data: 1\n\ndata: {\"usage\":2}\n\ndata: 3\n\ndata: [DONE]\n\n";
    for cut in 0..text.len() {
        let mut f = Framer::new();
        let mut out = String::new();
        for part in [&text[..cut], &text[cut..]] {
            let keep = |ev: &Event<'_>| !ev.data.starts_with(b"{\"usage\"");
            if let Some(b) = f.push_with(Bytes::copy_from_slice(part.as_bytes()), keep) {
                out.push_str(std::str::from_utf8(&b).unwrap());
            }
        }
        assert_eq!(
            out, "data: 1\n\ndata: 3\n\ndata: [DONE]\n\n",
            "cut at {cut}"
        );
        assert!(f.done());
    }
}
