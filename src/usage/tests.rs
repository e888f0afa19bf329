//! Reading `usage`: the forward read of the common shapes, the backward scan, and their agreement
//! with serde (the property test against generated documents is in `tests/fuzz.rs`).

use super::*;

fn u(prompt_tokens: u64, completion_tokens: u64) -> Option<Usage> {
    Some(Usage {
        prompt_tokens,
        completion_tokens,
    })
}

#[test]
fn finds_usage_in_answers_and_chunks() {
    let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":31,"completion_tokens":21,"total_tokens":52}}"#;
    assert_eq!(find(body), u(31, 21));
    assert_eq!(find(br#"{"choices":[],"usage":null}"#), None);
    assert_eq!(
        find(br#"{"choices":[{"delta":{"content":"\"usage\": {"}}]}"#),
        None
    );
    let last = br#"{"choices":[],"usage": {"prompt_tokens": 5, "completion_tokens": 7}}"#;
    assert_eq!(find(last).map(|u| u.total()), Some(12));
    assert_eq!(find(b"not json"), None);
    assert_eq!(find_in_event(body), find(body));
    assert_eq!(
        find_in_event(br#"{"choices":[{"delta":{"content":"x"}}]}"#),
        None
    );
    assert_eq!(find(br#"{"usage":{"prompt_tokens":"many"}}"#), None);
}

#[test]
fn only_the_top_level_member_counts() {
    // Nested deeper: not the answer's usage.
    let nested = br#"{"choices":[{"usage":{"prompt_tokens":1,"completion_tokens":2}}]}"#;
    assert_eq!(find(nested), None);
    let both =
        br#"{"usage":{"prompt_tokens":3,"completion_tokens":4},"x":{"usage":{"prompt_tokens":1}}}"#;
    assert_eq!(find(both), u(3, 4));
    // A key that ends in an escaped quote before `usage` is another key.
    let key =
        br#"{"a\"usage":{"prompt_tokens":9},"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
    assert_eq!(find(key), u(1, 1));
    assert_eq!(find(br#"{"a\"usage":{"prompt_tokens":9}}"#), None);
    // A string value that spells a member, with escaped quotes and backslashes.
    let s = br#"{"usage":{"prompt_tokens":2,"completion_tokens":3},"c":"\\\",\"usage\":{\"prompt_tokens\":8}}"}"#;
    assert_eq!(find(s), u(2, 3));
    let s = br#"{"c":"x\\","usage":{"completion_tokens":6}}"#;
    assert_eq!(find(s), u(0, 6));
}

#[test]
fn the_last_member_wins_and_null_means_none() {
    let two = br#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#;
    assert_eq!(find(two), u(2, 0));
    assert_eq!(find(br#"{"usage":{"prompt_tokens":1},"usage":null}"#), None);
    assert_eq!(find(br#"{"usage":{}}"#), u(0, 0));
    assert_eq!(
        find(b"{\"usage\" :\n{ \"prompt_tokens\" : 4 } }\n"),
        u(4, 0)
    );
}

#[test]
fn counts_are_u64_or_nothing() {
    for bad in [
        r#"{"usage":{"prompt_tokens":1.0}}"#,
        r#"{"usage":{"prompt_tokens":1e3}}"#,
        r#"{"usage":{"prompt_tokens":-1}}"#,
        r#"{"usage":{"prompt_tokens":null}}"#,
        r#"{"usage":{"prompt_tokens":18446744073709551616}}"#,
        r#"{"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#,
        r#"{"usage":[1,2]}"#,
        r#"{"usage":7}"#,
    ] {
        assert_eq!(find(bad.as_bytes()), None, "{bad}");
    }
    let max = br#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":-0}}"#;
    assert_eq!(find(max), u(u64::MAX, 0));
    let other = br#"{"usage":{"details":{"cached":[1,{"x":"}"}]},"prompt_tokens":5,"t":true}}"#;
    assert_eq!(find(other), u(5, 0));
}

#[test]
fn a_tail_is_enough_and_a_short_one_says_nothing() {
    let body = br#"{"id":"x","choices":[{"message":{"content":"a \"quoted\" \\ text"}}],"usage":{"prompt_tokens":31,"completion_tokens":21}}"#;
    for cut in 0..body.len() {
        let tail = &body[cut..];
        let got = find(tail);
        assert!(got.is_none() || got == u(31, 21), "cut at {cut}: {got:?}");
    }
    let at = memchr::memmem::find(body, b"\"usage\"").unwrap();
    assert_eq!(find(&body[at..]), u(31, 21));
    // A key whose opening quote follows backslashes back to the tail's start may be escaped
    // (`{"a\"usage":...}` names the key `a"usage`): not read.
    assert_eq!(find(br#"\"usage":{"prompt_tokens":1}}"#), None);
    assert_eq!(find(br#"x\"usage":{"prompt_tokens":1}}"#), None);
}

#[test]
fn the_common_shapes_are_read_forwards() {
    // OpenAI's (usage last) and vLLM's (members after it), and a stream's last chunk.
    for doc in [
        &br#"{"id":"x","choices":[{"message":{"content":"usage"}}],"usage":{"prompt_tokens":31,"completion_tokens":21,"total_tokens":52}}"#[..],
        br#"{"choices":[],"usage":{"prompt_tokens":31,"total_tokens":52,"completion_tokens":21,"prompt_tokens_details":null},"prompt_logprobs":null,"kv_transfer_params":{"a":[1,"}"]}}"#,
        b" {\"choices\" : [] , \"usage\" : { \"prompt_tokens\" : 31 , \"completion_tokens\" : 21 } , \"x\" : \"u\\\"}\" }\n",
    ] {
        assert_eq!(last_member(doc), Some(u(31, 21)), "{}", String::from_utf8_lossy(doc));
        assert_eq!(find(doc), u(31, 21));
    }
    assert_eq!(last_member(br#"{"usage":null,"x":1}"#), Some(None));
    // A string after it that spells the member (escaped, so never `"usage"` itself).
    let s = br#"{"usage":{"prompt_tokens":2,"completion_tokens":3},"c":"\",\"usage\":{\"prompt_tokens\":8}}"}"#;
    assert_eq!(last_member(s), Some(u(2, 3)));
}

#[test]
fn the_compact_form_reads_as_serde_reads_it() {
    let serde = |doc: &str| -> Option<Usage> {
        let v: serde_json::Value = serde_json::from_str(doc).ok()?;
        serde_json::from_value(v.get("usage")?.clone()).ok()
    };
    // (`-0`, which serde reads as 0 into a `u64` but as a float into a `Value`, is in
    // `counts_are_u64_or_nothing`.)
    let counts = [
        "0",
        "7",
        "18446744073709551615",
        "18446744073709551616",
        "1.5",
        "2e3",
        "-3",
        "null",
        "\"4\"",
    ];
    let rests = [
        "}",
        ",\"total_tokens\":9}",
        ",\"details\":{\"x\":[1,\"}\"]}}",
        " }",
    ];
    for p in counts {
        for c in counts {
            for rest in rests {
                let doc = format!(
                    r#"{{"id":"x","usage":{{"prompt_tokens":{p},"completion_tokens":{c}{rest}}}"#
                );
                assert_eq!(find(doc.as_bytes()), serde(&doc), "{doc}");
            }
            // A count given twice makes the usage unreadable (serde would take the last).
            for twice in [",\"prompt_tokens\":2}", ",\"completion_tokens\":2}"] {
                let doc =
                    format!(r#"{{"usage":{{"prompt_tokens":{p},"completion_tokens":{c}{twice}}}"#);
                assert_eq!(find(doc.as_bytes()), None, "{doc}");
            }
        }
    }
}

#[test]
fn what_cannot_be_read_forwards_is_scanned() {
    for (doc, want) in [
        // The last `usage` is nested deeper; the top-level one comes before it.
        (&br#"{"usage":{"prompt_tokens":3,"completion_tokens":4},"x":{"usage":{"prompt_tokens":1}}}"#[..], u(3, 4)),
        // A key that ends in `usage`.
        (br#"{"usage":{"prompt_tokens":1,"completion_tokens":1},"a\"usage":{"prompt_tokens":9}}"#, u(1, 1)),
        // The tail starts at the key.
        (br#""usage":{"prompt_tokens":5,"completion_tokens":6}}"#, u(5, 6)),
        // Bad counts: the scan reads the same member, and says nothing either.
        (br#"{"usage":{"prompt_tokens":1.5}}"#, None),
    ] {
        assert_eq!(last_member(doc), None, "{}", String::from_utf8_lossy(doc));
        assert_eq!(find(doc), want, "{}", String::from_utf8_lossy(doc));
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut x: u32 = 12345;
    for _ in 0..2000 {
        let len = (x % 64) as usize;
        let doc: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let alphabet = b"{}[]\":,\\ usage_tokens01-.e";
                alphabet[x as usize % alphabet.len()]
            })
            .collect();
        let _ = find(&doc);
        let mut framed = b"{\"usage\":".to_vec();
        framed.extend_from_slice(&doc);
        framed.push(b'}');
        let _ = find(&framed);
    }
}
