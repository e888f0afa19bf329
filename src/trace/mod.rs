//! Traces: the W3C trace context a request carries, and the OTLP export of its spans.
//!
//! Every request belongs to a trace: the one its client's `traceparent` names when that header is
//! valid (W3C Trace Context, level 1), else a new one. Switchyard's own span for the request is a
//! child of the client's, and each try against a peer is a child of that, with its own span id in
//! the `traceparent` sent upstream; so a model server's span hangs under the very try that
//! reached it. A `traceparent` that does not follow the spec is replaced, never forwarded.
//! `tracestate` passes through untouched, as the spec asks of a participant that adds no entry.
//!
//! Spans are exported only with `tracing.otlp_endpoint` set ([`export::Exporter`]); the
//! propagation above happens regardless.

pub mod export;

/// A 16-byte trace id (never all zeros).
pub type TraceId = [u8; 16];
/// An 8-byte span id (never all zeros).
pub type SpanId = [u8; 8];

/// The `trace-flags` bit that says the trace is sampled.
pub const SAMPLED: u8 = 0x01;

/// A `traceparent` header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    /// The span of the caller.
    pub parent_id: SpanId,
    pub flags: u8,
}

impl TraceParent {
    /// Parse a `traceparent` value. `None` unless it follows W3C Trace Context: lower-case hex,
    /// version `00` exactly 55 characters long (a later version may append `-` and more, which
    /// is ignored), version `ff` refused, trace id and parent id not all zeros.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        match version {
            0xff => return None,
            0x00 if value.len() != 55 => return None,
            _ if value.len() > 55 && value[55] != b'-' => return None,
            _ => {}
        }
        let mut trace_id = [0u8; 16];
        hex_into(&value[3..35], &mut trace_id)?;
        let mut parent_id = [0u8; 8];
        hex_into(&value[36..52], &mut parent_id)?;
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }
}

/// A `traceparent` value as it is written (version 00): 55 ASCII bytes, kept on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HeaderValue([u8; 55]);

impl HeaderValue {
    /// The value's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// The `traceparent` value (version 00) for a span `span` of trace `trace`.
pub fn header_value(trace: &TraceId, span: &SpanId, sampled: bool) -> HeaderValue {
    let mut v = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into_ascii(trace, &mut v[3..35]);
    hex_into_ascii(span, &mut v[36..52]);
    if sampled {
        v[54] = b'1';
    }
    HeaderValue(v)
}

/// Lower-case hex of `bytes` (a multiple of 8 long: ids are) into `out` (twice as long).
fn hex_into_ascii(bytes: &[u8], out: &mut [u8]) {
    debug_assert!(bytes.len() % 8 == 0 && out.len() == 2 * bytes.len());
    for (b, o) in bytes.chunks_exact(8).zip(out.chunks_exact_mut(16)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(b);
        o.copy_from_slice(&hex_u64(u64::from_be_bytes(word)));
    }
}

/// The 16 lower-case hex digits of `x`, most significant first, eight at a time in a word
/// (every request writes 48 of them into its `traceparent`; a table lookup per digit cost
/// four times as much).
fn hex_u64(x: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&digits((x >> 32) as u32).to_be_bytes());
    out[8..].copy_from_slice(&digits(x as u32).to_be_bytes());
    out
}

/// The eight hex digits of `v`, one per byte of the word, the most significant in its top byte.
fn digits(v: u32) -> u64 {
    // Each nibble into a byte of its own, keeping their order.
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // A nibble of 10 or more carries into bit 4 when 6 is added: those go from '0'+n to 'a'+n-10.
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    x + 0x3030_3030_3030_3030 + letters * u64::from(b'a' - b'0' - 10)
}

/// Replace the span id of the `traceparent` header in the HTTP/1 request head `head` (as
/// [`header_value`] wrote it) with `span`. `None` when the head has no such header.
pub fn with_span(head: &[u8], span: &SpanId) -> Option<Vec<u8>> {
    let at = memchr::memmem::find(head, b"\r\ntraceparent: 00-")? + b"\r\ntraceparent: 00-".len();
    let id_at = at + 33;
    if head.len() < id_at + 16 {
        return None;
    }
    let mut out = head.to_vec();
    hex_into_ascii(span, &mut out[id_at..id_at + 16]);
    Some(out)
}

/// A new random trace id.
pub fn new_trace_id() -> TraceId {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&nonzero_u64().to_be_bytes());
    t[8..].copy_from_slice(&nonzero_u64().to_be_bytes());
    t
}

/// A new random span id.
pub fn new_span_id() -> SpanId {
    nonzero_u64().to_be_bytes()
}

/// 32 random lower-case hex digits (a request id), from the same generator as the ids.
pub fn random_hex_id() -> String {
    let mut v = [0u8; 32];
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&nonzero_u64().to_be_bytes());
    r[8..].copy_from_slice(&nonzero_u64().to_be_bytes());
    hex_into_ascii(&r, &mut v);
    // Only hex digits were written.
    String::from_utf8_lossy(&v).into_owned()
}

/// A random `u64` other than 0, from a generator per thread (wyrand, seeded from the operating
/// system's generator on its first use). Ids must be unique and unpredictable enough to sample
/// by, not secret: this costs a few instructions where the cryptographic generator costs
/// hundreds.
fn nonzero_u64() -> u64 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    STATE.with(|state| loop {
        let mut s = state.get();
        if s == 0 {
            s = rand::random::<u64>() | 1;
        }
        s = s.wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let m = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        let r = (m >> 64) as u64 ^ m as u64;
        if r != 0 {
            return r;
        }
    })
}

/// Is the trace `id` sampled at `ratio`? The decision depends on the id alone (as
/// OpenTelemetry's `TraceIdRatioBased`: its low 8 bytes against `ratio` of the range), so every
/// service that samples by ratio decides the same way for the same trace.
pub fn sampled_by_ratio(id: &TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&id[8..]);
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    (u64::from_be_bytes(low) >> 1) < bound
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    Some(hex_digit(two[0])? << 4 | hex_digit(two[1])?)
}

fn hex_into(text: &[u8], out: &mut [u8]) -> Option<()> {
    for (i, o) in out.iter_mut().enumerate() {
        *o = hex_byte(&text[2 * i..2 * i + 2])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn hex_digits_a_word_at_a_time() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for edge in [0, u64::MAX, 0x0123_4567_89ab_cdef, 0xa0a0_a0a0_9f9f_9f9f] {
            assert_eq!(hex_u64(edge), format!("{edge:016x}").as_bytes());
        }
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            assert_eq!(hex_u64(x), format!("{x:016x}").as_bytes());
            let mut out = [0u8; 32];
            hex_into_ascii(&[x.to_be_bytes(), (!x).to_be_bytes()].concat(), &mut out);
            assert_eq!(out, format!("{x:016x}{:016x}", !x).as_bytes());
        }
    }

    #[test]
    fn parses_the_spec_example() {
        let t = TraceParent::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(hex(&t.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&t.parent_id), "00f067aa0ba902b7");
        assert_eq!(t.flags, SAMPLED);
        let v = header_value(&t.trace_id, &t.parent_id, true);
        assert_eq!(v.as_bytes(), GOOD.as_bytes());
    }

    #[test]
    fn refuses_what_the_spec_refuses() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad:?}");
        }
        // A later version may carry more after a dash.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert!(TraceParent::parse(later.as_bytes()).is_some());
    }

    #[test]
    fn a_retry_gets_its_own_span_id_in_the_head() {
        let trace = new_trace_id();
        let value = header_value(&trace, &[1; 8], false);
        let value = String::from_utf8(value.as_bytes().to_vec()).unwrap();
        let head = format!("POST / HTTP/1.1\r\nhost: x\r\ntraceparent: {value}\r\nx-a: b\r\n\r\n");
        let span = [0xab; 8];
        let patched = String::from_utf8(with_span(head.as_bytes(), &span).unwrap()).unwrap();
        let want = header_value(&trace, &span, false);
        let want = std::str::from_utf8(want.as_bytes()).unwrap();
        assert_eq!(patched, head.replace(&value, want));
        assert_eq!(with_span(b"GET / HTTP/1.1\r\n\r\n", &span), None);
    }

    #[test]
    fn request_ids_are_32_hex_digits() {
        let a = random_hex_id();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(a, random_hex_id());
    }

    #[test]
    fn ids_are_never_zero_nor_repeated() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let (t, a, b) = (new_trace_id(), new_span_id(), new_span_id());
            assert!(t != [0; 16] && a != [0; 8] && b != [0; 8] && a != b);
            assert!(seen.insert(t), "a trace id came twice");
        }
        // Every thread has its own sequence.
        let other = std::thread::spawn(new_trace_id).join().unwrap();
        assert!(!seen.contains(&other));
    }

    #[test]
    fn ratio_sampling_is_decided_by_the_id() {
        let ids: Vec<TraceId> = (0..2000).map(|_| new_trace_id()).collect();
        let kept = ids.iter().filter(|id| sampled_by_ratio(id, 0.25)).count();
        assert!((350..=650).contains(&kept), "{kept} of 2000 at 0.25");
        assert!(ids.iter().all(|id| sampled_by_ratio(id, 1.0)));
        assert!(!ids.iter().any(|id| sampled_by_ratio(id, 0.0)));
        assert_eq!(
            sampled_by_ratio(&ids[0], 0.3),
            sampled_by_ratio(&ids[0], 0.3)
        );
    }
}
