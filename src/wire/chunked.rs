//! The chunked transfer coding (RFC 9112 §7.1): an incremental decoder that takes the bytes that
//! have arrived and hands out the data in them without copying it, and the line that starts a
//! chunk on the way out.
//!
//! The decoder is strict where leniency has been used to smuggle requests past proxies: every
//! line ends with CRLF, a chunk size is at most 16 hex digits, its line (extensions included)
//! and the trailer section are bounded, and the data of each chunk must be followed by CRLF.
//! Extensions and trailer fields are read and dropped.

use bytes::{Buf, Bytes};

/// Longest chunk-size line accepted, extensions included.
pub const MAX_SIZE_LINE: usize = 4096;

/// Largest trailer section accepted (it is dropped).
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk size that is not 1 to 16 hex digits, or a malformed extension.
    Size,
    /// A chunk-size or trailer line longer than its bound.
    LineTooLong,
    /// A line, or a chunk's data, not followed by CRLF.
    MissingCrlf,
    /// A trailer section over [`MAX_TRAILERS`].
    TrailersTooLarge,
}

impl ChunkError {
    /// What a person reads in the error answer.
    pub fn message(self) -> &'static str {
        match self {
            ChunkError::Size => "invalid chunk size",
            ChunkError::LineTooLong => "chunk-size line too long",
            ChunkError::MissingCrlf => "chunk not terminated by CRLF",
            ChunkError::TrailersTooLarge => "trailer section too large",
        }
    }
}

/// What one step of decoding found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Some of the body (never empty).
    Data(Bytes),
    /// The input ends before the next piece: read more and call again.
    More,
    /// The last chunk and the trailer section are read: the body is complete.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

/// Decodes one chunked body, whatever pieces it arrives in.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { state: State::Size }
    }
}

impl Decoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Has the whole body been decoded?
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Take the next piece of the body out of `input` (which holds the bytes received and not
    /// yet decoded; what is decoded is removed from it).
    pub fn decode(&mut self, input: &mut impl Buf) -> Result<Decoded, ChunkError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Data(left) => {
                    let n = input
                        .remaining()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    if n == 0 {
                        return Ok(Decoded::More);
                    }
                    let data = input.copy_to_bytes(n);
                    self.state = match left - n as u64 {
                        0 => State::DataEnd,
                        rest => State::Data(rest),
                    };
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => {
                    let s = input.chunk();
                    match s {
                        [b'\r', b'\n', ..] => {
                            input.advance(2);
                            self.state = State::Size;
                        }
                        [] | [b'\r'] => return Ok(Decoded::More),
                        _ => return Err(ChunkError::MissingCrlf),
                    }
                }
                State::Size => {
                    let Some(line) = line(input.chunk(), MAX_SIZE_LINE)? else {
                        return Ok(Decoded::More);
                    };
                    let size = chunk_size(&input.chunk()[..line])?;
                    input.advance(line + 2);
                    self.state = match size {
                        0 => State::Trailers(0),
                        n => State::Data(n),
                    };
                }
                State::Trailers(seen) => {
                    let room = MAX_TRAILERS.saturating_sub(seen);
                    let Some(len) = line(input.chunk(), room).map_err(|e| match e {
                        ChunkError::LineTooLong => ChunkError::TrailersTooLarge,
                        e => e,
                    })?
                    else {
                        return Ok(Decoded::More);
                    };
                    input.advance(len + 2);
                    self.state = match len {
                        0 => State::Done,
                        _ => State::Trailers(seen + len + 2),
                    };
                }
            }
        }
    }
}

/// The length of the line at the start of `s` (without its CRLF), once its CRLF has arrived;
/// an error if it ends with a bare LF or runs past `max` bytes.
fn line(s: &[u8], max: usize) -> Result<Option<usize>, ChunkError> {
    match memchr::memchr(b'\n', &s[..s.len().min(max.saturating_add(2))]) {
        Some(0) => Err(ChunkError::MissingCrlf),
        Some(lf) if s[lf - 1] != b'\r' => Err(ChunkError::MissingCrlf),
        Some(lf) => Ok(Some(lf - 1)),
        None if s.len() > max.saturating_add(1) => Err(ChunkError::LineTooLong),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]`: 1 to 16 hex digits, then nothing or extensions, each `BWS ";"
/// ...` with no control character but HTAB.
fn chunk_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 16 {
        return Err(ChunkError::Size);
    }
    let rest = &line[digits..];
    let ext = rest.iter().position(|&b| b != b' ' && b != b'\t');
    match ext {
        None if rest.is_empty() => {}
        Some(i) if rest[i] == b';' => {
            if rest[i..]
                .iter()
                .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                return Err(ChunkError::Size);
            }
        }
        _ => return Err(ChunkError::Size),
    }
    line[..digits].iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16).ok_or(ChunkError::Size)?;
        Ok((n << 4) | u64::from(d))
    })
}

/// The line that starts a chunk of `len` bytes (`{len:x}\r\n`), written into `out`.
pub fn size_line(len: usize, out: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = 16;
    let mut n = len;
    loop {
        i -= 1;
        out[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out[16] = b'\r';
    out[17] = b'\n';
    &out[i..]
}

/// The last chunk and an empty trailer section: the end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
