//! The supervisor's end of one worker socket.
//!
//! Reads are cancel-safe: bytes land in a buffer owned by [`Conn`], and frames
//! are split off it only when whole, so `next` can sit in a `select!` beside
//! timers and commands without ever losing half a frame. Everything a worker
//! sends is untrusted: the frame limit is checked before buffering a payload.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use ward_protocol::{FrameLimit, FromWorker, HEADER_LEN, Message, ProtocolError, ToWorker};

pub struct Conn {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    limit: FrameLimit,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed by decoded frames.
    start: usize,
    out: Vec<u8>,
}

impl Conn {
    pub fn new(stream: UnixStream, limit: FrameLimit) -> Conn {
        let (reader, writer) = stream.into_split();
        Conn {
            reader,
            writer,
            limit,
            buf: Vec::with_capacity(64 << 10),
            start: 0,
            out: Vec::new(),
        }
    }

    /// The next message from the worker. Cancel-safe.
    pub async fn next(&mut self) -> Result<FromWorker, ProtocolError> {
        loop {
            if let Some((payload, used)) = self.limit.split(&self.buf[self.start..])? {
                let msg = FromWorker::decode(payload);
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return msg;
            }
            // Compact before growing: the buffer holds at most one frame plus one read.
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            // Read at most what the frame in progress still needs (header first).
            let want = match self.buf.get(..HEADER_LEN) {
                Some(header) => {
                    let len = self
                        .limit
                        .check_header(header.try_into().expect("4-byte header"))?;
                    HEADER_LEN + len - self.buf.len()
                }
                None => HEADER_LEN - self.buf.len(),
            };
            let chunk = want.max(64 << 10);
            self.buf.reserve(chunk);
            let n = (&mut self.reader)
                .take(chunk as u64)
                .read_buf(&mut self.buf)
                .await?;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    ProtocolError::Closed
                } else {
                    ProtocolError::Truncated {
                        expected: (HEADER_LEN + want) as u64,
                        got: self.buf.len() as u64,
                    }
                });
            }
        }
    }

    pub async fn send(&mut self, msg: &ToWorker) -> Result<(), ProtocolError> {
        self.limit.encode(msg, &mut self.out)?;
        self.writer.write_all(&self.out).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_protocol::{Hello, write_message};

    #[tokio::test]
    async fn frames_survive_partial_reads_and_cancellation() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(a, FrameLimit::DEFAULT);
        let mut wire = Vec::new();
        let mut scratch = Vec::new();
        let hello = FromWorker::Hello(Hello {
            protocol_version: 1,
            pid: 7,
            token: "t".into(),
        });
        for _ in 0..3 {
            let mut one = Vec::new();
            write_message(&mut one, &hello, FrameLimit::DEFAULT, &mut scratch).unwrap();
            wire.extend(one);
        }
        let b = b.into_std().unwrap();
        b.set_nonblocking(false).unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut b = b;
            for byte in wire {
                b.write_all(&[byte]).unwrap();
            }
        });
        for _ in 0..3 {
            // A timer that fires first cancels `next` mid-frame; nothing is lost.
            loop {
                tokio::select! {
                    msg = conn.next() => { assert_eq!(msg.unwrap(), hello); break; }
                    () = tokio::time::sleep(std::time::Duration::from_micros(50)) => {}
                }
            }
        }
        writer.join().unwrap();
        assert!(matches!(conn.next().await, Err(ProtocolError::Closed)));
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_before_buffering() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(a, FrameLimit::new(1024));
        let mut b = b;
        b.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        assert!(matches!(
            conn.next().await,
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        assert!(conn.buf.capacity() < 1 << 20);
    }
}
