//! Length-prefixed framing: a 4-byte little-endian payload length, then the
//! payload. The length is checked against a [`FrameLimit`] before a single byte
//! of buffer is reserved for it, so a hostile peer announcing a 4 GiB frame
//! costs nothing.

use std::io::{self, Read, Write};

use crate::{Message, ProtocolError};

/// Size of the frame header.
pub const HEADER_LEN: usize = 4;

/// No frame may ever exceed this, whatever the configuration says: 1 GiB.
pub const HARD_MAX_FRAME: u32 = 1 << 30;

/// The largest payload a reader accepts and a writer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimit(u32);

impl FrameLimit {
    /// 64 MiB: room for a batch of full-HD frames, far below the host's memory.
    pub const DEFAULT: FrameLimit = FrameLimit(64 << 20);

    /// A limit of `bytes`, capped at [`HARD_MAX_FRAME`].
    pub const fn new(bytes: u32) -> FrameLimit {
        if bytes > HARD_MAX_FRAME {
            FrameLimit(HARD_MAX_FRAME)
        } else {
            FrameLimit(bytes)
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }

    /// Validates a header: the payload length it announces, if acceptable.
    pub fn check_header(self, header: [u8; HEADER_LEN]) -> Result<usize, ProtocolError> {
        let len = u32::from_le_bytes(header);
        if len == 0 {
            return Err(ProtocolError::EmptyFrame);
        }
        if len > self.0 {
            return Err(ProtocolError::FrameTooLarge {
                len: u64::from(len),
                max: self.0,
            });
        }
        Ok(len as usize)
    }

    /// Encodes `msg` as one whole frame (header included) into `out`, which is
    /// cleared first so that callers can reuse one buffer.
    pub fn encode<M: Message>(self, msg: &M, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        out.clear();
        out.extend_from_slice(&[0; HEADER_LEN]);
        msg.encode(out)?;
        let len = out.len() - HEADER_LEN;
        if len as u64 > u64::from(self.0) {
            return Err(ProtocolError::FrameTooLarge {
                len: len as u64,
                max: self.0,
            });
        }
        // The check above bounds len by a u32.
        out[..HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }

    /// Splits one frame off the front of `buf` without copying: `Ok(None)` when
    /// more bytes are needed, else the payload and the bytes the frame used.
    pub fn split(self, buf: &[u8]) -> Result<Option<(&[u8], usize)>, ProtocolError> {
        let Some((header, rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = self.check_header(*header)?;
        Ok(rest.get(..len).map(|payload| (payload, HEADER_LEN + len)))
    }
}

impl Default for FrameLimit {
    fn default() -> Self {
        FrameLimit::DEFAULT
    }
}

/// Reads one message from a blocking stream. `buf` is scratch space reused
/// across calls. A clean end of stream before a header is [`ProtocolError::Closed`].
pub fn read_message<M: Message>(
    r: &mut impl Read,
    limit: FrameLimit,
    buf: &mut Vec<u8>,
) -> Result<M, ProtocolError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Err(ProtocolError::Closed);
    }
    if got < HEADER_LEN {
        return Err(ProtocolError::Truncated {
            expected: HEADER_LEN as u64,
            got: got as u64,
        });
    }
    let len = limit.check_header(header)?;
    buf.clear();
    buf.resize(len, 0);
    let got = read_full(r, buf)?;
    if got < len {
        return Err(ProtocolError::Truncated {
            expected: len as u64,
            got: got as u64,
        });
    }
    M::decode(buf)
}

/// Writes one message to a blocking stream. `buf` is scratch space.
pub fn write_message<M: Message>(
    w: &mut impl Write,
    msg: &M,
    limit: FrameLimit,
    buf: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    limit.encode(msg, buf)?;
    w.write_all(buf)?;
    w.flush()?;
    Ok(())
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
