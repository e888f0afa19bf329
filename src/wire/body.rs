//! Where a message's body stands while it is read, whichever side reads it: its framing, the
//! bytes a length still allows, the chunk decoder, and whether the end has been reached.

use super::chunked::{self, ChunkError, Decoded};
use super::Framing;
use bytes::{Bytes, BytesMut};

/// The reading state of one body.
#[derive(Debug)]
pub struct Body {
    framing: Framing,
    /// Body bytes still to come, for [`Framing::Length`].
    left: u64,
    chunks: chunked::Decoder,
    done: bool,
}

impl Body {
    /// A body framed by `framing`, nothing of it read yet.
    pub fn new(framing: Framing) -> Body {
        Body {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunks: chunked::Decoder::new(),
            done: matches!(framing, Framing::Empty | Framing::Length(0)),
        }
    }

    /// The body of a message whose head has not been read: nothing known, nothing done.
    pub fn before_head() -> Body {
        Body {
            framing: Framing::Empty,
            left: 0,
            chunks: chunked::Decoder::new(),
            done: false,
        }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// For [`Framing::Length`], the bytes still to come.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// Has the whole body been read?
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The end of a close-delimited body: the connection ended.
    pub fn closed(&mut self) {
        self.done = true;
    }

    /// The next piece of the body already in `buf`, if any; marks the end when it is reached.
    /// A close-delimited body hands out whatever is buffered and ends only by [`Self::closed`].
    pub fn next_piece(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, ChunkError> {
        match self.framing {
            Framing::Empty => {
                self.done = true;
                Ok(None)
            }
            Framing::Length(_) => {
                let n = buf
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                if n == 0 {
                    return Ok(None);
                }
                self.left -= n as u64;
                self.done = self.left == 0;
                Ok(Some(buf.split_to(n).freeze()))
            }
            Framing::Close => Ok((!buf.is_empty()).then(|| buf.split().freeze())),
            Framing::Chunked => match self.chunks.decode(buf)? {
                Decoded::Data(d) => Ok(Some(d)),
                Decoded::More => Ok(None),
                Decoded::End => {
                    self.done = true;
                    Ok(None)
                }
            },
        }
    }
}
