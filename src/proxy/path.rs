//! The request path as routes see it and as it is forwarded: normalised once, before routing,
//! so that `/v1/../admin` cannot match a `/v1/` route and then reach the upstream's `/admin`.
//!
//! What an edge does here, after nginx (which merges slashes and refuses `..` above the root):
//! - `%2e` (any case) is a dot, so `%2e%2e` is a `..` segment like the spelled-out one;
//! - `.` segments are removed and `..` removes the segment before it (RFC 3986 §5.2.4);
//! - repeated slashes are merged (nginx's `merge_slashes on`);
//! - ambiguous paths are refused with 400 rather than guessed at: a `..` above the root, an
//!   encoded slash or backslash (`%2f`, `%5c`: one upstream decodes them, another does not),
//!   a raw backslash, an encoded NUL (`%00`), or a path that does not start with `/`.
//!
//! Every other byte, percent-encoded or not, is left as the client sent it. The query is not
//! touched. The normalised path is what the route matches, what the cache keys and what the
//! upstream receives.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguous {
    AboveRoot,
    EncodedSeparator,
    Backslash,
    EncodedNul,
    NotAbsolute,
}

impl Ambiguous {
    /// What the 400 answer says.
    pub fn message(self) -> &'static str {
        match self {
            Ambiguous::AboveRoot => "the request path climbs above the root with '..'",
            Ambiguous::EncodedSeparator => "the request path has an encoded '/' or '\\'",
            Ambiguous::Backslash => "the request path has a backslash",
            Ambiguous::EncodedNul => "the request path has an encoded NUL",
            Ambiguous::NotAbsolute => "the request path does not start with '/'",
        }
    }
}

/// `path` normalised (see the module doc); borrowed when there was nothing to do.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, Ambiguous> {
    if !path.starts_with('/') {
        return Err(Ambiguous::NotAbsolute);
    }
    // Most paths have nothing to look at twice: no escape, no backslash, no empty or dot
    // segment. One pass says so, without the lower-cased copy the checks below search.
    let b = path.as_bytes();
    let plain = !b.iter().enumerate().any(|(i, &c)| {
        c == b'%' || c == b'\\' || (c == b'/' && matches!(b.get(i + 1), Some(b'/' | b'.')))
    });
    if plain {
        return Ok(Cow::Borrowed(path));
    }
    if path.contains('\\') {
        return Err(Ambiguous::Backslash);
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(Ambiguous::EncodedSeparator);
    }
    if lower.contains("%00") {
        return Err(Ambiguous::EncodedNul);
    }
    let suspicious = lower.contains("%2e") || path.contains("//") || path.contains("/.");
    if !suspicious {
        return Ok(Cow::Borrowed(path));
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        let dots = dot_segment(seg);
        match dots {
            Some(1) => trailing_slash = i == last,
            Some(2) => {
                if out.pop().is_none() {
                    return Err(Ambiguous::AboveRoot);
                }
                trailing_slash = i == last;
            }
            _ if seg.is_empty() => trailing_slash = i == last,
            _ => {
                out.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        s.push('/');
    }
    Ok(Cow::Owned(s))
}

/// `Some(1)` for a `.` segment, `Some(2)` for `..` (dots possibly spelled `%2e`).
fn dot_segment(seg: &str) -> Option<u8> {
    let mut n = 0u8;
    let b = seg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'.' {
            i += 1;
        } else if b[i] == b'%'
            && b.get(i + 1) == Some(&b'2')
            && matches!(b.get(i + 2), Some(b'e' | b'E'))
        {
            i += 3;
        } else {
            return None;
        }
        n = n.checked_add(1)?;
        if n > 2 {
            return None;
        }
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_slashes() {
        let ok = |p: &str| normalize(p).unwrap().into_owned();
        assert_eq!(ok("/v1/chat/completions"), "/v1/chat/completions");
        assert!(matches!(normalize("/v1/chat"), Ok(Cow::Borrowed(_))));
        assert_eq!(ok("/v1/../admin"), "/admin");
        assert_eq!(ok("/v1/%2e%2E/admin"), "/admin");
        assert_eq!(ok("/v1/./chat//completions"), "/v1/chat/completions");
        assert_eq!(ok("/v1/x/.."), "/v1/");
        assert_eq!(ok("/v1/x/."), "/v1/x/");
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("/a/..."), "/a/...");
        assert_eq!(ok("/a/.hidden"), "/a/.hidden");
        assert_eq!(ok("/a/%2e%2e%2e"), "/a/%2e%2e%2e");
        assert_eq!(normalize("/../x"), Err(Ambiguous::AboveRoot));
        assert_eq!(normalize("/a/../../x"), Err(Ambiguous::AboveRoot));
        assert_eq!(normalize("/a%2fb"), Err(Ambiguous::EncodedSeparator));
        assert_eq!(normalize("/a%5Cb"), Err(Ambiguous::EncodedSeparator));
        assert_eq!(normalize("/a\\b"), Err(Ambiguous::Backslash));
        assert_eq!(normalize("/a%00"), Err(Ambiguous::EncodedNul));
        assert_eq!(normalize("*"), Err(Ambiguous::NotAbsolute));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in ["/v1/../a//b/./c/..", "/x/%2E/y", "/a/b/", "/"] {
            let once = normalize(p).unwrap().into_owned();
            assert_eq!(normalize(&once).unwrap(), once, "{p}");
        }
    }
}
