//! Async framing over tokio streams: the same frames as [`crate::read_message`]
//! and [`crate::write_message`], for the supervisor's runtime.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::HEADER_LEN;
use crate::{FrameLimit, Message, ProtocolError};

/// Reads one message. Cancel-safe only between messages: dropping the future
/// mid-frame leaves the stream unusable, which callers treat as a dead worker.
pub async fn read_message<M: Message>(
    r: &mut (impl AsyncRead + Unpin),
    limit: FrameLimit,
    buf: &mut Vec<u8>,
) -> Result<M, ProtocolError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header).await?;
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
    let got = read_full(r, buf).await?;
    if got < len {
        return Err(ProtocolError::Truncated {
            expected: len as u64,
            got: got as u64,
        });
    }
    M::decode(buf)
}

/// Writes one message. `buf` is scratch space reused across calls.
pub async fn write_message<M: Message>(
    w: &mut (impl AsyncWrite + Unpin),
    msg: &M,
    limit: FrameLimit,
    buf: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    limit.encode(msg, buf)?;
    w.write_all(buf).await?;
    w.flush().await?;
    Ok(())
}

async fn read_full(r: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]).await? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}
