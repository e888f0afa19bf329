//! Token usage as OpenAI-compatible servers report it: the `usage` object of a non-streaming
//! answer, or of the final chunk of a stream (sent when the request asked for
//! `stream_options.include_usage`, and by some servers always). Read by the token metrics and
//! token budgets.
//!
//! Read on every answer, so read without a JSON parser. The common shape is read forwards from
//! the last `"usage"` in the text: when that key, its value and the members after it end the
//! document, it is the top-level member (see `last_member`). Otherwise the document is scanned
//! backwards from its end (where servers put `usage`), keeping count of nesting and skipping
//! strings whole, to the top-level `"usage"` member; only that object is then read forwards, for
//! its two integers.
//! Nothing is allocated. What it finds is what `serde_json` would find in the document's
//! top-level `usage` (`tests/fuzz.rs` checks that on generated documents): the last member of
//! that name wins, a `usage` nested deeper or inside a string is not it, a count that is not a
//! `u64` (or appears twice) makes the whole `usage` unreadable. Working from the end also means a
//! document's tail is enough (the relay keeps only the end of a long answer) as long as the
//! `usage` member is in it; a tail that ends before it is found gives `None`, never a wrong count.
//! A key spelled with escapes (`"\u0075sage"`) is not recognised: no server writes one.

/// Tokens one answer used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

impl Usage {
    /// Both counts added.
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// Two answers' usage added (a resumed stream's two parts), saturating.
impl std::ops::Add for Usage {
    type Output = Usage;

    fn add(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_add(other.completion_tokens),
        }
    }
}

/// The top-level `usage` of a JSON answer body (or of its tail), or of one SSE event's data;
/// `None` when it has none (or it is `null`, as in the chunks of a stream before its last).
/// Scanning from the end, a JSON answer's `usage` (its last member) is reached at once.
pub fn find(json: &[u8]) -> Option<Usage> {
    if let Some(found) = last_member(json) {
        return found;
    }
    let value = top_level_member(json, b"usage")?;
    read_usage(json, value).map(|(u, _)| u)
}

/// The common case, cheaply: the last `"usage"` in the text is a key that, with its value and
/// the members after it (read forwards, so their strings are told apart), ends the document. In
/// a well-formed document (or its tail) that is the top-level `usage` and the last of its name:
/// the quote that opens it follows a `,` or `{` (so it is not inside a string: there a quote is
/// escaped) and exactly one `}` closes the members after it. `None` when that cannot be told
/// (a `usage` nested deeper, a key that ends in `usage`, a count that is not a `u64`): the
/// backward scan decides.
fn last_member(s: &[u8]) -> Option<Option<Usage>> {
    const KEY: &[u8] = b"\"usage\"";
    let mut end = s.len();
    let at = loop {
        let u = memchr::memrchr(b'u', &s[..end])?;
        if u >= 1 && s.get(u - 1..u - 1 + KEY.len()) == Some(KEY) {
            break u - 1;
        }
        end = u;
    };
    if !matches!(s[..at].trim_ascii_end().last(), Some(b',' | b'{')) {
        return None;
    }
    let mut i = skip_ws(s, at + KEY.len());
    if s.get(i) != Some(&b':') {
        return None;
    }
    i = skip_ws(s, i + 1);
    let usage = if s.get(i) == Some(&b'{') {
        let (u, next) = read_usage(s, i)?;
        i = next;
        Some(u)
    } else {
        i = skip_value(s, i)?;
        None
    };
    loop {
        i = skip_ws(s, i);
        match s.get(i)? {
            b'}' => return (skip_ws(s, i + 1) == s.len()).then_some(usage),
            b',' => {
                i = skip_ws(s, i + 1);
                if s.get(i) != Some(&b'"') {
                    return None;
                }
                i = skip_ws(s, string_end(s, i)? + 1);
                if s.get(i) != Some(&b':') {
                    return None;
                }
                i = skip_value(s, skip_ws(s, i + 1))?;
            }
            _ => return None,
        }
    }
}

/// [`find`] for one SSE event's data, after a cheap first look: most chunks of a stream do not
/// carry the word at all, and the look skips them a vector at a time.
pub fn find_in_event(data: &[u8]) -> Option<Usage> {
    // Built once: making a finder costs more than searching a short chunk with it.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
    FINDER.find(data)?;
    find(data)
}

/// Where the value of the last top-level member `name` of the object `json` ends with starts.
fn top_level_member(json: &[u8], name: &[u8]) -> Option<usize> {
    let end = json.trim_ascii_end();
    if end.last() != Some(&b'}') {
        return None;
    }
    let mut i = end.len() - 1;
    let mut depth = 1usize;
    while i > 0 {
        let c = end[i - 1];
        match c {
            b'"' => {
                i = string_start(end, i - 1)?;
                continue;
            }
            b'}' | b']' => depth += 1,
            b'{' | b'[' => {
                depth -= 1;
                if depth == 0 {
                    return None;
                }
            }
            b':' if depth == 1 => {
                let value = i;
                let close = end[..i - 1].trim_ascii_end().len().checked_sub(1)?;
                if end[close] != b'"' {
                    return None;
                }
                let open = string_start(end, close)?;
                if &end[open + 1..close] == name {
                    return Some(value);
                }
                i = open;
                continue;
            }
            _ => {}
        }
        i -= 1;
    }
    None
}

/// The index of the quote that opens the string whose closing quote is at `close`; `None` when
/// it cannot be told (the text starts inside the string).
fn string_start(s: &[u8], close: usize) -> Option<usize> {
    let mut at = close;
    loop {
        let q = memchr::memrchr(b'"', &s[..at])?;
        let slashes = s[..q].iter().rev().take_while(|&&b| b == b'\\').count();
        if slashes > 0 && slashes == q {
            // A run of backslashes back to the start: escaped or not depends on what is missing.
            return None;
        }
        if slashes % 2 == 0 {
            return Some(q);
        }
        at = q;
    }
}

/// The usage object whose value starts at `at` (after the colon), and where it ends.
fn read_usage(s: &[u8], at: usize) -> Option<(Usage, usize)> {
    let mut i = skip_ws(s, at);
    if s.get(i) != Some(&b'{') {
        return None;
    }
    let mut u = Usage::default();
    let (mut prompt, mut completion) = (false, false);
    // The compact form servers write, `{"prompt_tokens":N,"completion_tokens":N`, in one go;
    // the loop reads what follows it, or any other form from the start.
    let mut after_value = false;
    if let Some((p, c, end)) = compact(s, i) {
        (u.prompt_tokens, u.completion_tokens) = (p, c);
        (prompt, completion, after_value) = (true, true, true);
        i = end;
    } else {
        i = skip_ws(s, i + 1);
        if s.get(i) == Some(&b'}') {
            return Some((u, i + 1));
        }
    }
    loop {
        if after_value {
            i = skip_ws(s, i);
            match s.get(i) {
                Some(b',') => i = skip_ws(s, i + 1),
                Some(b'}') => return Some((u, i + 1)),
                _ => return None,
            }
        }
        after_value = true;
        // The two keys looked for are compared in place; any other is skipped whole.
        const PROMPT: &[u8] = b"\"prompt_tokens\"";
        const COMPLETION: &[u8] = b"\"completion_tokens\"";
        let rest = s.get(i..)?;
        let seen = match rest.get(1) {
            Some(b'p') if rest.starts_with(PROMPT) => {
                i += PROMPT.len();
                Some((&mut prompt, &mut u.prompt_tokens))
            }
            Some(b'c') if rest.starts_with(COMPLETION) => {
                i += COMPLETION.len();
                Some((&mut completion, &mut u.completion_tokens))
            }
            _ if rest.first() == Some(&b'"') => {
                i = string_end(s, i)? + 1;
                None
            }
            _ => return None,
        };
        i = skip_ws(s, i);
        if s.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(s, i + 1);
        match seen {
            Some((seen, count)) => {
                if std::mem::replace(seen, true) {
                    return None;
                }
                let (n, next) = read_u64(s, i)?;
                *count = n;
                i = next;
            }
            None => i = skip_value(s, i)?,
        }
    }
}

/// `{"prompt_tokens":N,"completion_tokens":N` at `at`, exactly: the two counts and where the
/// second ends.
fn compact(s: &[u8], at: usize) -> Option<(u64, u64, usize)> {
    const HEAD: &[u8] = b"{\"prompt_tokens\":";
    const NEXT: &[u8] = b",\"completion_tokens\":";
    let i = at + HEAD.len();
    if !s.get(at..i)?.eq(HEAD) {
        return None;
    }
    let (p, i) = read_u64(s, i)?;
    let j = i + NEXT.len();
    if !s.get(i..j)?.eq(NEXT) {
        return None;
    }
    let (c, end) = read_u64(s, j)?;
    Some((p, c, end))
}

/// A JSON number that is a `u64` (as serde reads one: `-0` is 0; a fraction, an exponent, a
/// negative number or one past `u64::MAX` is not), and where it ends.
fn read_u64(s: &[u8], at: usize) -> Option<(u64, usize)> {
    let negative = s.get(at) == Some(&b'-');
    let start = at + usize::from(negative);
    let mut end = start;
    let mut n: u64 = 0;
    while let Some(&d) = s.get(end).filter(|d| d.is_ascii_digit()) {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        end += 1;
    }
    if end == start || matches!(s.get(end), Some(b'.' | b'e' | b'E')) || (negative && n != 0) {
        return None;
    }
    Some((n, end))
}

/// Past the value that starts at `at`: a string, an object or array (nested ones included), or a
/// literal or number (up to the next delimiter).
fn skip_value(s: &[u8], at: usize) -> Option<usize> {
    match *s.get(at)? {
        b'"' => string_end(s, at).map(|e| e + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            while i < s.len() {
                match s[i] {
                    b'"' => i = string_end(s, i)?,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let len = s[at..]
                .iter()
                .take_while(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
                .count();
            Some(at + len)
        }
    }
}

/// The index of the quote that closes the string opened at `open`.
fn string_end(s: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', s.get(i..)?)?;
        if s[i] == b'"' {
            return Some(i);
        }
        i += 2;
    }
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    // Compact JSON has none: one comparison says so.
    while s
        .get(i)
        .is_some_and(|&b| b <= b' ' && b.is_ascii_whitespace())
    {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests;
