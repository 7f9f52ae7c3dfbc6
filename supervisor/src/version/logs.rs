//! Worker output: per-model-version log files and the in-memory stderr tail.
//!
//! Each worker's stdout and stderr are copied line by line into
//! `<log_dir>/<model_id>/<version>.log`. There is one file per model version,
//! shared by every worker process of that version, so the output of a crashed
//! worker is still there when its replacement starts, and the file rotates at a
//! size cap so a chatty plugin cannot fill the disk. Every record is one line:
//!
//! ```text
//! 2026-11-22T10:00:00.123Z stderr | Traceback (most recent call last):
//! 2026-11-22T10:00:01.002Z ward   | --- worker 1234 exited with status 1 ---
//! ```
//!
//! The supervisor's own notes use the label `ward`, which a plugin cannot forge:
//! its bytes never contain the newline that would start a record of their own.
//! The last lines of stderr are also kept in memory ([`Tail`]) so a model's
//! status can say why its worker died without reading the file.
//!
//! Plugins are untrusted, so everything here is bounded: a line without a
//! newline is cut into pieces of at most [`MAX_LINE_BYTES`] (a plugin printing a
//! gigabyte without one costs 16 KiB of buffer), the tail keeps a fixed number
//! of short lines, and [`tail_file`] reads at most the last MiB of a file.
//! Failing to write a log (a full disk) is reported once and otherwise ignored:
//! losing log lines is better than losing the model.

use std::collections::VecDeque;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, SeekFrom, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncSeekExt as _};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::time::Timestamp;

/// The longest line payload written as one record. Longer pipe output is cut
/// into pieces of this size; longer [`LogFile::write_line`] lines are truncated.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// The longest line kept by a [`Tail`]. The tail ends up in status JSON, where
/// a handful of 16 KiB lines would drown the reason a worker died; the full
/// line is in the log file.
pub const TAIL_LINE_BYTES: usize = 1024;

/// How many stderr lines a model's status usually shows.
pub const DEFAULT_TAIL_LINES: usize = 50;

/// How much of the end of a file [`tail_file`] reads, whatever it is asked for.
const TAIL_FILE_WINDOW: u64 = 1 << 20;

/// Bytes read from a worker pipe at a time. The records of one read are
/// written together, so this bounds the write buffer too: even a read that is
/// all newlines formats to about 30 times its size.
const READ_CHUNK: usize = 32 * 1024;

/// A write buffer grown beyond this by a flood is dropped rather than kept.
const KEEP_BUFFER_CAPACITY: usize = 256 * 1024;

/// Ends a record whose line went on past [`MAX_LINE_BYTES`] in the next record.
const CONTINUES_MARKER: &[u8] = b" [ward: continues on next line]";

/// Which of a worker's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The stream's name as it appears in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The label of the supervisor's own notes, padded to the width of the
/// stream names so the text column lines up.
const NOTE_LABEL: &str = "ward  ";

/// The path of a model version's log: `<log_dir>/<model_id>/<version>.log`.
///
/// Fails with [`io::ErrorKind::InvalidInput`] when `model_id` or `version`
/// is not a single plain path component, so that no name can point a log
/// outside its model's directory.
pub fn log_path(log_dir: &Path, model_id: &str, version: &str) -> io::Result<PathBuf> {
    check_component("model id", model_id)?;
    check_component("version", version)?;
    Ok(log_dir.join(model_id).join(format!("{version}.log")))
}

fn check_component(what: &str, name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {name:?} cannot name a log file"),
        ));
    }
    Ok(())
}

/// The log file of one model version, appended to by each of its workers in
/// turn and rotated at a size cap.
///
/// Writes go through `spawn_blocking` with plain `std::fs` calls rather than
/// through `tokio::fs::File`: the cost is the same (tokio's file does the same
/// thing underneath), but here an error belongs to the write that caused it
/// instead of surfacing on a later one, and a rotation (renames, a new file)
/// runs as one blocking job between two writes. The records of one pipe read
/// are written with a single job, so a plugin printing many short lines costs
/// one job per read, not one per line.
///
/// Write errors are not returned: the first is logged with `tracing::warn!`,
/// later ones are dropped silently until a write succeeds again.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    /// Shared with the blocking job that writes it, so that a write abandoned
    /// half-way (its task aborted) cannot take the handle away.
    file: Arc<File>,
    /// Rotate before a record would take the file past this; 0 never rotates.
    max_bytes: u64,
    /// Rotated files kept; 0 truncates the file in place instead.
    keep: u32,
    /// The size the file will have once `pending` is written. Counted rather
    /// than asked of the file system; a failed write makes it an overestimate,
    /// which only rotates a little early.
    size: u64,
    /// Formatted records not yet written.
    pending: Vec<u8>,
    /// Offsets into `pending` before which the file must rotate.
    rotate_at: Vec<usize>,
    /// Whether the last write failed, so that an outage is reported once.
    failing: bool,
}

impl LogFile {
    /// Opens (creating it and its directory, mode 0750, as needed) the log of
    /// `model_id` `version` for appending. A file left by an earlier worker or
    /// an earlier supervisor is appended to, and counts towards `max_bytes`.
    ///
    /// This is a blocking call, but a short one (a `mkdir` and an `open`) made
    /// once per worker start.
    pub fn open(
        log_dir: &Path,
        model_id: &str,
        version: &str,
        max_bytes: u64,
        keep: u32,
    ) -> io::Result<LogFile> {
        let path = log_path(log_dir, model_id, version)?;
        if let Some(dir) = path.parent() {
            DirBuilder::new().recursive(true).mode(0o750).create(dir)?;
        }
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path,
            file: Arc::new(file),
            max_bytes,
            keep,
            size,
            pending: Vec::new(),
            rotate_at: Vec::new(),
            failing: false,
        })
    }

    /// The path of the current (not rotated) file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `line` as a record of `stream`, timestamped now.
    ///
    /// A trailing newline (and carriage return) is dropped; a line holding
    /// more newlines is written as several records, so that every line of the
    /// file starts with a timestamp. A line longer than [`MAX_LINE_BYTES`] is
    /// truncated, with a marker saying how much was dropped.
    pub async fn write_line(&mut self, stream: Stream, line: &[u8]) {
        let at = Timestamp::now();
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        for part in line.split(|&b| b == b'\n') {
            let part = part.strip_suffix(b"\r").unwrap_or(part);
            let (part, end) = truncate(part);
            self.append_record(&at, stream.as_str(), part, &[], end);
        }
        self.flush().await;
    }

    /// Writes one of the supervisor's own notes, such as
    /// `worker 1234 started (generation 2)`, as a `--- … ---` record, so that
    /// restarts and exits show between the worker's lines. Newlines in `text`
    /// become spaces.
    pub async fn note(&mut self, text: &str) {
        let at = Timestamp::now();
        let mut line = Vec::with_capacity(text.len() + 8);
        line.extend_from_slice(b"--- ");
        line.extend(text.bytes().map(|b| match b {
            b'\n' | b'\r' => b' ',
            b => b,
        }));
        line.extend_from_slice(b" ---");
        let (line, end) = truncate(&line);
        self.append_record(&at, NOTE_LABEL, line, &[], end);
        self.flush().await;
    }

    /// Formats one record (`head` followed by `tail`) into the write buffer,
    /// marking where the file has to rotate first.
    fn append_record(&mut self, at: &Timestamp, label: &str, head: &[u8], tail: &[u8], end: End) {
        let start = self.pending.len();
        push_record(&mut self.pending, at, label, head, tail, end);
        let len = (self.pending.len() - start) as u64;
        // A record longer than the cap still goes into a file of its own,
        // rather than rotating forever.
        if self.max_bytes > 0 && self.size > 0 && self.size + len > self.max_bytes {
            self.rotate_at.push(start);
            self.size = 0;
        }
        self.size += len;
    }

    /// Writes the buffered records, rotating where `append_record` said to.
    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let job = FlushJob {
            file: Arc::clone(&self.file),
            path: self.path.clone(),
            keep: self.keep,
            pending: std::mem::take(&mut self.pending),
            rotate_at: std::mem::take(&mut self.rotate_at),
        };
        match tokio::task::spawn_blocking(move || job.run()).await {
            Ok(done) => {
                if let Some(file) = done.file {
                    self.file = file;
                }
                if done.buffer.capacity() <= KEEP_BUFFER_CAPACITY {
                    self.pending = done.buffer;
                }
                self.report(done.result);
            }
            // Only when the runtime is shutting down (or the job panicked).
            Err(e) => self.report(Err(io::Error::other(e))),
        }
    }

    fn report(&mut self, result: io::Result<()>) {
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                info!(path = %self.path.display(), "worker log is writable again");
            }
            Ok(()) => {}
            Err(error) if !self.failing => {
                self.failing = true;
                warn!(
                    path = %self.path.display(),
                    %error,
                    "cannot write worker log; dropping its output until a write succeeds"
                );
            }
            Err(_) => {}
        }
    }
}

/// Cuts `line` to [`MAX_LINE_BYTES`], saying how it ends.
fn truncate(line: &[u8]) -> (&[u8], End) {
    match line.get(..MAX_LINE_BYTES) {
        Some(kept) if line.len() > MAX_LINE_BYTES => {
            (kept, End::Truncated(line.len() - MAX_LINE_BYTES))
        }
        _ => (line, End::Line),
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

/// One batch of records to write on the blocking pool.
struct FlushJob {
    file: Arc<File>,
    path: PathBuf,
    keep: u32,
    pending: Vec<u8>,
    rotate_at: Vec<usize>,
}

struct FlushDone {
    /// The new file, when a rotation opened one.
    file: Option<Arc<File>>,
    /// The emptied write buffer, handed back to keep its allocation.
    buffer: Vec<u8>,
    /// The first error met; the writes after it were still tried.
    result: io::Result<()>,
}

impl FlushJob {
    fn run(self) -> FlushDone {
        let mut file = Arc::clone(&self.file);
        let mut new_file = None;
        let mut result = Ok(());
        let mut start = 0;
        for &cut in &self.rotate_at {
            keep_first_error(&mut result, (&*file).write_all(&self.pending[start..cut]));
            match rotate(&self.path, self.keep, &file) {
                Ok(Some(opened)) => {
                    file = Arc::new(opened);
                    new_file = Some(Arc::clone(&file));
                }
                Ok(None) => {}
                // Keep writing to the file we have: an oversized log beats a
                // lost one.
                Err(e) => keep_first_error(&mut result, Err(e)),
            }
            start = cut;
        }
        keep_first_error(&mut result, (&*file).write_all(&self.pending[start..]));
        let mut buffer = self.pending;
        buffer.clear();
        FlushDone {
            file: new_file,
            buffer,
            result,
        }
    }
}

fn keep_first_error(first: &mut io::Result<()>, next: io::Result<()>) {
    if first.is_ok() {
        *first = next;
    }
}

/// Moves `<path>` to `<path>.1`, each `<path>.N` to `<path>.N+1` and drops
/// `<path>.<keep>`, returning the fresh `<path>`; or, with `keep == 0`,
/// empties `current` in place and returns `None`.
fn rotate(path: &Path, keep: u32, current: &File) -> io::Result<Option<File>> {
    if keep == 0 {
        // The file is open for append, so the next write lands at offset 0.
        current.set_len(0)?;
        return Ok(None);
    }
    let numbered = |n: u32| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    ignore_missing(std::fs::remove_file(numbered(keep)))?;
    for n in (1..keep).rev() {
        ignore_missing(std::fs::rename(numbered(n), numbered(n + 1)))?;
    }
    std::fs::rename(path, numbered(1))?;
    open_append(path).map(Some)
}

/// Rotated files that do not exist yet are not an error: a young log has
/// fewer than `keep` of them.
fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// How a record's text ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// At a newline (or the end of the stream).
    Line,
    /// Cut at [`MAX_LINE_BYTES`]; the line goes on in the next record.
    Continues,
    /// Cut at [`MAX_LINE_BYTES`], with this many bytes dropped.
    Truncated(usize),
}

/// Appends `<timestamp> <label> | <head><tail><marker>\n` to `out`.
fn push_record(out: &mut Vec<u8>, at: &Timestamp, label: &str, head: &[u8], tail: &[u8], end: End) {
    out.extend_from_slice(at.as_bytes());
    out.push(b' ');
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b" | ");
    out.extend_from_slice(head);
    out.extend_from_slice(tail);
    match end {
        End::Line => {}
        End::Continues => out.extend_from_slice(CONTINUES_MARKER),
        End::Truncated(dropped) => {
            out.extend_from_slice(format!(" [ward: {dropped} more bytes truncated]").as_bytes());
        }
    }
    out.push(b'\n');
}

/// The last lines of a worker's stderr, kept in memory for its model's status.
///
/// Holds at most `capacity` lines of at most [`TAIL_LINE_BYTES`] each; bytes
/// that are not UTF-8 are replaced.
#[derive(Debug, Clone)]
pub struct Tail {
    capacity: usize,
    lines: VecDeque<String>,
}

impl Tail {
    /// A tail keeping the last `capacity` lines.
    pub fn new(capacity: usize) -> Tail {
        Tail {
            capacity,
            lines: VecDeque::with_capacity(capacity),
        }
    }

    /// Adds a line (without its newline), dropping the oldest when full.
    pub fn push(&mut self, line: &[u8]) {
        self.push_parts(line, &[]);
    }

    /// Adds the line `head` followed by `tail`, without joining them first.
    fn push_parts(&mut self, head: &[u8], tail: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        let mut bytes = Vec::with_capacity(TAIL_LINE_BYTES.min(head.len() + tail.len()));
        for part in [head, tail] {
            let room = TAIL_LINE_BYTES - bytes.len();
            bytes.extend_from_slice(&part[..part.len().min(room)]);
        }
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if head.len() + tail.len() > TAIL_LINE_BYTES {
            // The cut may have split a character, which shows as U+FFFD.
            line.push('…');
        }
        self.lines.push_back(line);
    }

    /// The lines held, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }

    /// How many lines are held.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no line is held.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Forgets every line, for a worker that starts afresh.
    pub fn clear(&mut self) {
        self.lines.clear();
    }
}

impl Default for Tail {
    fn default() -> Tail {
        Tail::new(DEFAULT_TAIL_LINES)
    }
}

/// Copies a worker's output stream into its log (and, when given, `tail`)
/// line by line until end of file, on a task of its own.
///
/// The buffer is bounded: a line longer than [`MAX_LINE_BYTES`] is written as
/// several records, each but the last ending in a `[ward: continues on next
/// line]` marker. A trailing carriage return is dropped from each line. A
/// read error ends the copy like end of file does; write errors are handled by
/// [`LogFile`].
///
/// The task ends when every copy of the pipe's write end is closed, which may
/// be later than the worker's exit when it left a child of its own holding
/// one: await the handle under a deadline (then abort it) so the worker's last
/// lines are in the log before noting its exit.
pub fn spawn_pipe(
    tracker: &TaskTracker,
    reader: impl AsyncRead + Unpin + Send + 'static,
    stream: Stream,
    sink: Arc<tokio::sync::Mutex<LogFile>>,
    tail: Option<Arc<std::sync::Mutex<Tail>>>,
) -> JoinHandle<()> {
    tracker.spawn(copy_lines(reader, stream, sink, tail))
}

async fn copy_lines(
    mut reader: impl AsyncRead + Unpin,
    stream: Stream,
    sink: Arc<tokio::sync::Mutex<LogFile>>,
    tail: Option<Arc<std::sync::Mutex<Tail>>>,
) {
    let mut buf = vec![0; READ_CHUNK];
    let mut lines = LineSplitter::default();
    loop {
        let chunk = match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => Some(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                warn!(%stream, %error, "cannot read worker output; no longer copying it");
                None
            }
        };
        let at = Timestamp::now();
        let mut log = sink.lock().await;
        {
            // A std guard, so it must be gone before the await below; the
            // compiler holds us to that, since the task has to be Send.
            let mut tail = lock_tail(tail.as_deref());
            let mut emit = |head: &[u8], rest: &[u8], end| {
                log.append_record(&at, stream.as_str(), head, rest, end);
                if let Some(tail) = tail.as_deref_mut() {
                    tail.push_parts(head, rest);
                }
            };
            match chunk {
                Some(data) => lines.feed(data, &mut emit),
                None => lines.finish(&mut emit),
            }
        }
        log.flush().await;
        if chunk.is_none() {
            return;
        }
    }
}

/// Locks the tail, if any. A panic while it was held cannot have left it
/// inconsistent (every update is one push), so a poisoned lock is used as is.
fn lock_tail(tail: Option<&std::sync::Mutex<Tail>>) -> Option<std::sync::MutexGuard<'_, Tail>> {
    tail.map(crate::sync::lock)
}

/// Splits a byte stream into lines of at most [`MAX_LINE_BYTES`], holding at
/// most that much of an unfinished line between reads.
#[derive(Debug, Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds the next bytes of the stream, calling `emit(head, tail, end)` for
    /// each line (or piece of one) they finish; the line is `head` followed by
    /// `tail`, given in two parts to save a copy.
    fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8], &[u8], End)) {
        while !data.is_empty() {
            let room = MAX_LINE_BYTES - self.partial.len();
            // One byte past the room: a line of exactly MAX_LINE_BYTES whose
            // newline is that byte is whole, not cut.
            let look = data.len().min(room + 1);
            if let Some(i) = data[..look].iter().position(|&b| b == b'\n') {
                let (head, tail) = trim_cr(&self.partial, &data[..i]);
                emit(head, tail, End::Line);
                self.partial.clear();
                data = &data[i + 1..];
            } else if look > room {
                emit(&self.partial, &data[..room], End::Continues);
                self.partial.clear();
                data = &data[room..];
            } else {
                self.partial.extend_from_slice(data);
                return;
            }
        }
    }

    /// Emits what is left of a last line without a newline.
    fn finish(&mut self, mut emit: impl FnMut(&[u8], &[u8], End)) {
        if !self.partial.is_empty() {
            let (head, tail) = trim_cr(&self.partial, &[]);
            emit(head, tail, End::Line);
            self.partial.clear();
        }
    }
}

/// Drops a carriage return ending the line `head` + `tail`.
fn trim_cr<'a>(head: &'a [u8], tail: &'a [u8]) -> (&'a [u8], &'a [u8]) {
    if tail.is_empty() {
        (head.strip_suffix(b"\r").unwrap_or(head), tail)
    } else {
        (head, tail.strip_suffix(b"\r").unwrap_or(tail))
    }
}

/// The last `max_lines` lines of the file at `path`, oldest first, without
/// their newlines and with bytes that are not UTF-8 replaced.
///
/// Reads at most the last MiB of the file, so it may return fewer lines than
/// asked for when they are long. The file is read as it was when opened: a
/// rotation meanwhile does not disturb it.
pub async fn tail_file(path: &Path, max_lines: usize) -> io::Result<Vec<String>> {
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    if max_lines == 0 || len == 0 {
        return Ok(Vec::new());
    }
    let window_start = len.saturating_sub(TAIL_FILE_WINDOW);
    // Start one byte early: if that byte is a newline the window starts on a
    // whole line, which is kept; otherwise the first, partial, line is dropped.
    let read_start = window_start.saturating_sub(1);
    file.seek(SeekFrom::Start(read_start)).await?;
    let want = len - read_start;
    let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    // `take`: the file may grow while it is read; what came after the
    // length we looked at is not wanted and could be unbounded.
    file.take(want).read_to_end(&mut buf).await?;

    let mut text = &buf[..];
    if window_start > 0 {
        text = match text.iter().position(|&b| b == b'\n') {
            Some(i) => &text[i + 1..],
            None => &[],
        };
    }
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let mut lines: Vec<String> = text
        .rsplit(|&b| b == b'\n')
        .take(max_lines)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect();
    lines.reverse();
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    /// The text of each record, the prefix checked and dropped.
    fn texts(path: &Path) -> Vec<String> {
        read(path)
            .lines()
            .map(|line| {
                let (prefix, text) = line.split_once(" | ").expect("a record has a prefix");
                assert_eq!(prefix.len(), 24 + 1 + 6, "{prefix:?}");
                text.to_owned()
            })
            .collect()
    }

    fn rotated(path: &Path, n: u32) -> PathBuf {
        PathBuf::from(format!("{}.{n}", path.display()))
    }

    #[tokio::test]
    async fn records_are_prefixed_with_time_and_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), "digits", "1.0.0", 1 << 20, 3).unwrap();
        assert_eq!(log.path(), dir.path().join("digits").join("1.0.0.log"));
        log.write_line(Stream::Stderr, b"hello\n").await;
        log.write_line(Stream::Stdout, b"crlf\r\n").await;
        log.write_line(Stream::Stdout, b"two\nlines").await;
        log.note("worker 1234 started (generation 2)").await;

        let content = read(log.path());
        let lines: Vec<&str> = content.lines().collect();
        assert_eq!(lines.len(), 5, "{content}");
        for line in &lines {
            let (at, _) = line.split_at(24);
            assert!(at.ends_with('Z') && at.as_bytes()[10] == b'T', "{line}");
            assert!(at.starts_with("20"), "{line}");
        }
        assert_eq!(&lines[0][24..], " stderr | hello");
        assert_eq!(&lines[1][24..], " stdout | crlf");
        assert_eq!(&lines[2][24..], " stdout | two");
        assert_eq!(&lines[3][24..], " stdout | lines");
        assert_eq!(
            &lines[4][24..],
            " ward   | --- worker 1234 started (generation 2) ---"
        );
    }

    #[tokio::test]
    async fn long_lines_are_truncated_with_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), "m", "1", 1 << 20, 3).unwrap();
        log.write_line(Stream::Stderr, &[b'x'; MAX_LINE_BYTES + 100])
            .await;
        log.write_line(Stream::Stderr, &[b'y'; MAX_LINE_BYTES])
            .await;
        let texts = texts(log.path());
        assert_eq!(texts.len(), 2);
        let marker = " [ward: 100 more bytes truncated]";
        assert_eq!(texts[0].len(), MAX_LINE_BYTES + marker.len());
        assert!(texts[0].ends_with(marker));
        assert_eq!(texts[1], "y".repeat(MAX_LINE_BYTES));
    }

    #[test]
    fn names_that_leave_the_model_directory_are_refused() {
        let dir = Path::new("/logs");
        for (model, version) in [
            ("..", "1"),
            ("a/b", "1"),
            ("m", ""),
            ("m", "../x"),
            ("", "1"),
        ] {
            let err = log_path(dir, model, version).unwrap_err();
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidInput,
                "{model:?} {version:?}"
            );
        }
        assert_eq!(
            log_path(dir, "m", "1.0.0").unwrap(),
            Path::new("/logs/m/1.0.0.log")
        );
    }

    #[tokio::test]
    async fn rotation_shifts_files_and_keeps_only_keep() {
        let dir = tempfile::tempdir().unwrap();
        // Records here are 24 + 1 + 6 + 3 + 4 + 1 = 39 bytes: five per file.
        let mut log = LogFile::open(dir.path(), "m", "1", 200, 2).unwrap();
        for i in 0..40 {
            log.write_line(Stream::Stdout, format!("{i:04}").as_bytes())
                .await;
        }
        let path = log.path().to_owned();
        assert!(!rotated(&path, 3).exists());
        let mut all = Vec::new();
        for file in [rotated(&path, 2), rotated(&path, 1), path.clone()] {
            let len = std::fs::metadata(&file).unwrap().len();
            assert!(len <= 200, "{} is {len} bytes", file.display());
            all.extend(texts(&file));
        }
        // Oldest first across .2, .1 and the live file, nothing missing
        // between them, and ending with the last line written.
        let numbers: Vec<u32> = all.iter().map(|t| t.parse().unwrap()).collect();
        assert_eq!(numbers.last(), Some(&39));
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert_eq!(numbers.len(), 15, "{numbers:?}");
    }

    #[tokio::test]
    async fn rotation_within_one_batch_of_pipe_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::open(dir.path(), "m", "1", 200, 5).unwrap();
        let path = log.path().to_owned();
        let sink = Arc::new(tokio::sync::Mutex::new(log));
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let task = spawn_pipe(&TaskTracker::new(), rx, Stream::Stdout, sink, None);
        // One write, so most likely one read and one batch with two rotations.
        let text: String = (0..12).map(|i| format!("{i:04}\n")).collect();
        tx.write_all(text.as_bytes()).await.unwrap();
        drop(tx);
        task.await.unwrap();
        let mut all = Vec::new();
        for file in [rotated(&path, 2), rotated(&path, 1), path.clone()] {
            assert!(std::fs::metadata(&file).unwrap().len() <= 200);
            all.extend(texts(&file));
        }
        let expected: Vec<String> = (0..12).map(|i| format!("{i:04}")).collect();
        assert_eq!(all, expected);
        assert!(!rotated(&path, 3).exists());
    }

    #[tokio::test]
    async fn keep_zero_truncates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), "m", "1", 200, 0).unwrap();
        for i in 0..23 {
            log.write_line(Stream::Stdout, format!("{i:04}").as_bytes())
                .await;
        }
        let path = log.path();
        assert!(!rotated(path, 1).exists());
        assert!(std::fs::metadata(path).unwrap().len() <= 200);
        // 23 records at five per file: the live one holds the last three.
        assert_eq!(texts(path), ["0020", "0021", "0022"]);
    }

    #[tokio::test]
    async fn a_restarted_worker_appends_to_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = LogFile::open(dir.path(), "m", "1", 1 << 20, 3).unwrap();
        first.note("worker 1 started (generation 1)").await;
        first.write_line(Stream::Stderr, b"boom").await;
        drop(first);
        let mut second = LogFile::open(dir.path(), "m", "1", 1 << 20, 3).unwrap();
        second.note("worker 2 started (generation 2)").await;
        second.write_line(Stream::Stderr, b"fine").await;
        assert_eq!(
            texts(second.path()),
            [
                "--- worker 1 started (generation 1) ---",
                "boom",
                "--- worker 2 started (generation 2) ---",
                "fine",
            ]
        );
    }

    #[tokio::test]
    async fn an_existing_file_counts_towards_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = LogFile::open(dir.path(), "m", "1", 200, 1).unwrap();
        for i in 0..4 {
            first
                .write_line(Stream::Stdout, format!("{i:04}").as_bytes())
                .await;
        }
        drop(first);
        let mut second = LogFile::open(dir.path(), "m", "1", 200, 1).unwrap();
        for i in 4..7 {
            second
                .write_line(Stream::Stdout, format!("{i:04}").as_bytes())
                .await;
        }
        assert_eq!(texts(&rotated(second.path(), 1)).len(), 5);
        assert_eq!(texts(second.path()), ["0005", "0006"]);
    }

    #[tokio::test]
    async fn a_flood_without_newlines_is_cut_into_bounded_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::open(dir.path(), "m", "1", 1 << 30, 1).unwrap();
        let path = log.path().to_owned();
        let sink = Arc::new(tokio::sync::Mutex::new(log));
        let tail = Arc::new(std::sync::Mutex::new(Tail::new(5)));
        // A small pipe, so the reader sees the flood in many reads.
        let (mut tx, rx) = tokio::io::duplex(4096);
        let task = spawn_pipe(
            &TaskTracker::new(),
            rx,
            Stream::Stderr,
            sink,
            Some(Arc::clone(&tail)),
        );
        const FLOOD: usize = 200 * 1024;
        let writer = tokio::spawn(async move {
            tx.write_all(&[b'x'; FLOOD]).await.unwrap();
            tx.write_all(b"\nlast words").await.unwrap();
        });
        writer.await.unwrap();
        task.await.unwrap();

        let texts = texts(&path);
        let marker = std::str::from_utf8(CONTINUES_MARKER).unwrap();
        let mut payload = 0;
        for text in &texts[..texts.len() - 1] {
            let piece = text.strip_suffix(marker).unwrap_or(text);
            assert!(piece.len() <= MAX_LINE_BYTES, "{}", piece.len());
            assert!(piece.bytes().all(|b| b == b'x'));
            payload += piece.len();
        }
        assert_eq!(payload, FLOOD);
        assert_eq!(texts.len(), FLOOD.div_ceil(MAX_LINE_BYTES) + 1);
        assert!(texts[0].ends_with(marker));
        assert!(!texts[texts.len() - 2].ends_with(marker));
        assert_eq!(texts.last().unwrap(), "last words");

        let tail = tail.lock().unwrap().lines();
        assert_eq!(tail.len(), 5);
        assert_eq!(tail.last().unwrap(), "last words");
        assert!(tail[0].len() <= TAIL_LINE_BYTES + '…'.len_utf8());
    }

    #[tokio::test]
    async fn a_child_process_writes_to_log_and_tail() {
        use std::process::Stdio;
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::open(dir.path(), "m", "1", 1 << 20, 1).unwrap();
        let path = log.path().to_owned();
        let sink = Arc::new(tokio::sync::Mutex::new(log));
        let tail = Arc::new(std::sync::Mutex::new(Tail::default()));
        let mut child = tokio::process::Command::new("sh")
            .args([
                "-c",
                "echo out; echo err >&2; printf 'dying words' >&2; exit 3",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = spawn_pipe(
            &TaskTracker::new(),
            child.stdout.take().unwrap(),
            Stream::Stdout,
            Arc::clone(&sink),
            None,
        );
        let err = spawn_pipe(
            &TaskTracker::new(),
            child.stderr.take().unwrap(),
            Stream::Stderr,
            Arc::clone(&sink),
            Some(Arc::clone(&tail)),
        );
        let status = child.wait().await.unwrap();
        out.await.unwrap();
        err.await.unwrap();
        sink.lock()
            .await
            .note(&format!("worker exited: {status}"))
            .await;

        let content = read(&path);
        assert!(content.contains(" stdout | out\n"), "{content}");
        assert!(content.contains(" stderr | err\n"), "{content}");
        assert!(content.contains(" stderr | dying words\n"), "{content}");
        assert!(content.ends_with("exit status: 3 ---\n"), "{content}");
        assert_eq!(tail.lock().unwrap().lines(), ["err", "dying words"]);
    }

    #[tokio::test]
    async fn a_full_disk_is_reported_and_survived() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), "m", "1", 1 << 20, 1).unwrap();
        let good = Arc::clone(&log.file);
        // /dev/full fails every write with ENOSPC, as a full log disk would.
        log.file = Arc::new(OpenOptions::new().append(true).open("/dev/full").unwrap());
        log.write_line(Stream::Stderr, b"lost").await;
        assert!(log.failing);
        log.write_line(Stream::Stderr, b"lost too").await;
        assert!(log.failing);
        log.file = good;
        log.write_line(Stream::Stderr, b"kept").await;
        assert!(!log.failing);
        assert_eq!(texts(log.path()), ["kept"]);
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_cap_is_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::open(dir.path(), "m", "1", 1 << 30, 1).unwrap();
        let path = log.path().to_owned();
        let sink = Arc::new(tokio::sync::Mutex::new(log));
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let task = spawn_pipe(&TaskTracker::new(), rx, Stream::Stdout, sink, None);
        let mut data = vec![b'a'; MAX_LINE_BYTES];
        data.extend_from_slice(b"\nb\n");
        tx.write_all(&data).await.unwrap();
        drop(tx);
        task.await.unwrap();
        // Compared by length and content apart, so a failure prints no 16 KiB line.
        let texts = texts(&path);
        let lens: Vec<usize> = texts.iter().map(String::len).collect();
        assert_eq!(lens, [MAX_LINE_BYTES, 1]);
        assert!(texts[0].bytes().all(|b| b == b'a'));
        assert_eq!(texts[1], "b");
    }

    #[test]
    fn splitter_handles_lines_across_reads() {
        let mut splitter = LineSplitter::default();
        let mut out: Vec<(String, End)> = Vec::new();
        let mut emit = |h: &[u8], t: &[u8], end| {
            out.push((String::from_utf8([h, t].concat()).unwrap(), end));
        };
        splitter.feed(b"par", &mut emit);
        splitter.feed(b"tial\nwhole\n\nnext", &mut emit);
        splitter.feed(b"\r", &mut emit);
        splitter.feed(b"\nend", &mut emit);
        splitter.finish(&mut emit);
        let lines: Vec<&str> = out.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(lines, ["partial", "whole", "", "next", "end"]);
        assert!(out.iter().all(|(_, end)| *end == End::Line));
    }

    #[test]
    fn splitter_waits_for_the_byte_after_a_full_line() {
        // A full line's newline may come in the next read: the line was whole.
        let mut splitter = LineSplitter::default();
        let mut out: Vec<(usize, End)> = Vec::new();
        let mut emit = |h: &[u8], t: &[u8], end| out.push((h.len() + t.len(), end));
        splitter.feed(&[b'a'; MAX_LINE_BYTES], &mut emit);
        splitter.feed(b"\n", &mut emit);
        // Here the byte after the full line is not a newline: the line is cut.
        splitter.feed(&[b'a'; MAX_LINE_BYTES], &mut emit);
        splitter.feed(b"b", &mut emit);
        splitter.finish(&mut emit);
        assert_eq!(
            out,
            [
                (MAX_LINE_BYTES, End::Line),
                (MAX_LINE_BYTES, End::Continues),
                (1, End::Line)
            ]
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut tail = Tail::new(50);
        assert!(tail.is_empty());
        for i in 0..60 {
            tail.push(format!("line {i}").as_bytes());
        }
        let lines = tail.lines();
        assert_eq!(tail.len(), 50);
        assert_eq!(lines.first().unwrap(), "line 10");
        assert_eq!(lines.last().unwrap(), "line 59");
        tail.push(b"bad \xff byte");
        assert_eq!(tail.lines().last().unwrap(), "bad \u{fffd} byte");
        tail.push(&[b'z'; TAIL_LINE_BYTES * 3]);
        assert_eq!(
            tail.lines().last().unwrap(),
            &format!("{}…", "z".repeat(TAIL_LINE_BYTES))
        );
        tail.clear();
        assert!(tail.lines().is_empty());

        let mut none = Tail::new(0);
        none.push(b"dropped");
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn tail_file_reads_only_the_end_of_a_big_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let mut content = String::new();
        for i in 0..200_000 {
            content.push_str(&format!("line number {i:08}\n"));
        }
        assert!(content.len() > 3 << 20);
        std::fs::write(&path, &content).unwrap();

        let lines = tail_file(&path, 100).await.unwrap();
        let expected: Vec<String> = (199_900..200_000)
            .map(|i| format!("line number {i:08}"))
            .collect();
        assert_eq!(lines, expected);

        // Asking for more than the window holds gives the whole lines in the
        // last MiB, the first of them not cut.
        let lines = tail_file(&path, usize::MAX).await.unwrap();
        assert!(lines.len() < 200_000 && lines.len() as u64 >= (TAIL_FILE_WINDOW / 21) - 1);
        assert!(
            lines
                .iter()
                .all(|l| l.len() == 20 && l.starts_with("line number "))
        );
        assert_eq!(lines.last().unwrap(), "line number 00199999");
    }

    #[tokio::test]
    async fn tail_file_of_small_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small.log");
        std::fs::write(&path, "one\ntwo\nno newline").unwrap();
        assert_eq!(
            tail_file(&path, 10).await.unwrap(),
            ["one", "two", "no newline"]
        );
        assert_eq!(tail_file(&path, 2).await.unwrap(), ["two", "no newline"]);
        assert!(tail_file(&path, 0).await.unwrap().is_empty());
        std::fs::write(&path, "").unwrap();
        assert!(tail_file(&path, 10).await.unwrap().is_empty());
        let err = tail_file(&dir.path().join("missing.log"), 10)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
