//! Container logs as `kubectl logs` reads them (upstream's `pkg/kubelet/kuberuntime/logs`): the
//! CRI log file a runtime writes (`<RFC3339Nano> <stdout|stderr> <P|F> <message>`), turned back
//! into the container's output with the options of a `PodLogOptions` (tailLines, sinceSeconds /
//! sinceTime, timestamps, limitBytes, follow).
//!
//! The byte handling is pure and unit-tested: [`parse_cri_line`] reads one record,
//! [`find_tail_start`] finds where the last N lines begin (reading the file backwards in blocks,
//! as upstream), and [`LogFilter`] applies since / timestamps / limit / tail to a sequence of
//! records. Partial (`P`) records are written without a newline, so the next record continues
//! the same output line; a timestamp prefix is only put at the start of an output line, as
//! upstream does.
//!
//! [`stream_logs`] drives a file: it reads to the end and, when following, waits for the file to
//! grow (inotify on its directory, with a one-second fallback), reopens it when the runtime
//! rotates it (a new file under the same name), and stops once the container is no longer
//! running and everything it wrote has been read.

use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Utc};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::runtime::Runtime;

/// Block size of the backwards search for the tail (upstream's `blockSize`).
const BLOCK_SIZE: u64 = 1024;
/// How long a follower waits for a file event before looking again anyway (upstream's
/// `logForceCheckPeriod`).
const FORCE_CHECK_PERIOD: Duration = Duration::from_secs(1);
/// Output is sent in chunks of at most this many bytes while catching up.
const CHUNK: usize = 32 * 1024;

/// Errors of log reading; their text is what the client sees.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("failed to try resolving symlinks in path {path:?}: {source}")]
    Resolve {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to open log file {path:?}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to tail {tail} lines of log file {path:?}: {source}")]
    Tail {
        tail: i64,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read log file {path:?}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to watch directory {dir:?}: {source}")]
    Watch {
        dir: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// What to read (upstream's `LogOptions`, made from a `PodLogOptions`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogOptions {
    /// The last N lines only; `None` = all.
    pub tail: Option<i64>,
    /// At most this many bytes; `None` = no limit.
    pub limit_bytes: Option<i64>,
    /// Records older than this are skipped.
    pub since: Option<DateTime<Utc>>,
    /// Keep reading until the container stops.
    pub follow: bool,
    /// Prefix every output line with its RFC3339Nano timestamp.
    pub timestamps: bool,
}

impl LogOptions {
    /// Upstream's `NewLogOptions`: sinceSeconds counts back from `now`; the later of it and
    /// sinceTime wins.
    pub fn new(
        tail: Option<i64>,
        limit_bytes: Option<i64>,
        since_seconds: Option<i64>,
        since_time: Option<DateTime<Utc>>,
        follow: bool,
        timestamps: bool,
        now: DateTime<Utc>,
    ) -> LogOptions {
        let mut since = since_seconds.map(|s| now - chrono::Duration::seconds(s));
        if let Some(t) = since_time {
            if since.is_none_or(|s| t > s) {
                since = Some(t);
            }
        }
        LogOptions {
            tail,
            limit_bytes,
            since,
            follow,
            timestamps,
        }
    }
}

/// Which pipe a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One parsed CRI log record.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord<'a> {
    pub timestamp: DateTime<FixedOffset>,
    pub stream: LogStream,
    /// `P`: the line goes on in the next record.
    pub partial: bool,
    /// The content, with its newline for a full record, without one for a partial record.
    pub log: &'a [u8],
}

/// Parses `<RFC3339Nano> <stream> <tag[:tag…]> <content>` (upstream's `parseCRILog`).
pub fn parse_cri_line(line: &[u8]) -> Result<LogRecord<'_>, String> {
    let (ts, rest) = split_space(line).ok_or("timestamp is not found")?;
    let ts = std::str::from_utf8(ts).map_err(|_| "timestamp is not valid UTF-8".to_string())?;
    let timestamp = DateTime::parse_from_rfc3339(ts)
        .map_err(|e| format!("unexpected timestamp format {ts:?}: {e}"))?;
    let (stream, rest) = split_space(rest).ok_or("stream type is not found")?;
    let stream = match stream {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        other => {
            return Err(format!(
                "unexpected stream type {:?}",
                String::from_utf8_lossy(other)
            ))
        }
    };
    let (tags, mut content) = split_space(rest).ok_or("log tag is not found")?;
    // Tags are `:`-separated and only the first one is known; keep forward compatible.
    let partial = tags.split(|b| *b == b':').next() == Some(b"P");
    if partial && content.last() == Some(&b'\n') {
        content = &content[..content.len() - 1];
    }
    Ok(LogRecord {
        timestamp,
        stream,
        partial,
        log: content,
    })
}

fn split_space(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|c| *c == b' ')?;
    Some((&b[..i], &b[i + 1..]))
}

/// Go's `time.RFC3339Nano`: nanoseconds with trailing zeros trimmed, `Z` for UTC, else the
/// offset as it was written.
pub fn format_rfc3339_nano(t: &DateTime<FixedOffset>) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    let offset = t.offset().local_minus_utc();
    if offset == 0 {
        s.push('Z');
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let o = offset.abs();
        s.push_str(&format!("{sign}{:02}:{:02}", o / 3600, (o % 3600) / 60));
    }
    s
}

/// Where the last `n` lines of `f` begin (upstream's `findTailLineStartIndex`): the file is read
/// backwards in blocks until more than `n` newlines are seen. `n < 0` = from the start.
pub fn find_tail_start<F: Read + Seek>(f: &mut F, n: i64) -> io::Result<u64> {
    if n < 0 {
        return Ok(0);
    }
    let size = f.seek(SeekFrom::End(0))?;
    let mut left = size;
    let mut count: i64 = 0;
    let mut buf: Vec<u8> = Vec::new();
    let mut right = size;
    while right > 0 && count <= n {
        left = right.saturating_sub(BLOCK_SIZE);
        buf.resize((right - left) as usize, 0);
        f.seek(SeekFrom::Start(left))?;
        f.read_exact(&mut buf)?;
        count += buf.iter().filter(|b| **b == b'\n').count() as i64;
        right = left;
    }
    // Too many lines in the first block read: skip past the extra ones.
    let mut skip = 0usize;
    while count > n {
        match buf[skip..].iter().position(|b| *b == b'\n') {
            Some(i) => {
                skip += i + 1;
                count -= 1;
            }
            None => break,
        }
    }
    Ok(left + skip as u64)
}

/// What to do after a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The byte limit or the tail count is reached: nothing more is written.
    Done,
}

/// Applies since / timestamps / limitBytes / tail (when not following) to records in file order,
/// appending what the client gets to an output buffer (upstream's `logWriter` and the counting
/// loop of `ReadLogs`).
#[derive(Debug)]
pub struct LogFilter {
    since: Option<DateTime<Utc>>,
    timestamps: bool,
    remain: i64,
    /// Records still to write when tail applies without follow; `None` = unlimited.
    left: Option<i64>,
    /// Whether the output so far ends a line (a timestamp prefix goes only there).
    at_line_start: bool,
}

impl LogFilter {
    pub fn new(opts: &LogOptions) -> LogFilter {
        LogFilter {
            since: opts.since,
            timestamps: opts.timestamps,
            remain: opts.limit_bytes.unwrap_or(i64::MAX),
            left: opts.tail.filter(|t| *t >= 0 && !opts.follow),
            at_line_start: true,
        }
    }

    /// Whether nothing more will be written (also before the first record: `--tail 0`).
    pub fn done(&self) -> bool {
        self.left == Some(0) || self.remain <= 0
    }

    /// One raw line of the file (with its newline, if any). Lines that do not parse are skipped,
    /// as upstream skips them.
    pub fn line(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Flow {
        if self.done() {
            return Flow::Done;
        }
        let rec = match parse_cri_line(raw) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("skipping a log line that does not parse: {e}");
                return Flow::Continue;
            }
        };
        let flow = self.record(&rec, out);
        if let Some(l) = &mut self.left {
            *l -= 1;
        }
        self.at_line_start = rec.log.last().is_none_or(|b| *b == b'\n');
        if self.done() {
            Flow::Done
        } else {
            flow
        }
    }

    fn record(&mut self, rec: &LogRecord<'_>, out: &mut Vec<u8>) -> Flow {
        if self
            .since
            .is_some_and(|s| rec.timestamp.with_timezone(&Utc) < s)
        {
            return Flow::Continue;
        }
        let start = out.len();
        if self.timestamps && self.at_line_start {
            out.extend_from_slice(format_rfc3339_nano(&rec.timestamp).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(rec.log);
        let written = (out.len() - start) as i64;
        if written >= self.remain {
            out.truncate(start + self.remain as usize);
            self.remain = 0;
            return Flow::Done;
        }
        self.remain -= written;
        Flow::Continue
    }
}

/// Opens the log at `path` positioned at the tail the options ask for. Errors here happen before
/// any output, so the server can answer them with a status.
pub async fn open_log(
    path: &Path,
    opts: &LogOptions,
) -> Result<(tokio::fs::File, PathBuf), LogError> {
    let path = path.to_path_buf();
    let tail = opts.tail.unwrap_or(-1);
    tokio::task::spawn_blocking(move || {
        let resolved = std::fs::canonicalize(&path).map_err(|source| LogError::Resolve {
            path: path.clone(),
            source,
        })?;
        let mut f = std::fs::File::open(&resolved).map_err(|source| LogError::Open {
            path: resolved.clone(),
            source,
        })?;
        let start = find_tail_start(&mut f, tail).map_err(|source| LogError::Tail {
            tail,
            path: resolved.clone(),
            source,
        })?;
        f.seek(SeekFrom::Start(start))
            .map_err(|source| LogError::Read {
                path: resolved.clone(),
                source,
            })?;
        Ok((tokio::fs::File::from_std(f), resolved))
    })
    .await
    .unwrap_or_else(|e| {
        Err(LogError::Read {
            path: PathBuf::new(),
            source: io::Error::other(e),
        })
    })
}

/// Whether the container whose log is followed may still write.
pub trait ContainerLiveness: Send + Sync {
    fn running(&self) -> impl std::future::Future<Output = bool> + Send;
}

/// The runtime's answer for one container (upstream's `isContainerRunning`: created or running;
/// an error or a missing container counts as stopped).
pub struct RuntimeLiveness {
    pub runtime: Runtime,
    pub container_id: String,
}

impl ContainerLiveness for RuntimeLiveness {
    async fn running(&self) -> bool {
        match self
            .runtime
            .container_status(&self.container_id, false)
            .await
        {
            Ok(r) => r.status.is_some_and(|s| {
                s.state == cri::pb::ContainerState::ContainerRunning as i32
                    || s.state == cri::pb::ContainerState::ContainerCreated as i32
            }),
            Err(e) => {
                tracing::debug!(container = %self.container_id, "container status while following logs: {e}");
                false
            }
        }
    }
}

/// Streams the log from `file` (opened by [`open_log`] at `path`) into `tx` until the end (or,
/// when following, until the container has stopped and its last output is sent, or the receiver
/// is gone).
pub async fn stream_logs(
    file: tokio::fs::File,
    path: PathBuf,
    opts: LogOptions,
    liveness: impl ContainerLiveness,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
) {
    if let Err(e) = stream_inner(file, &path, &opts, &liveness, &tx).await {
        tracing::warn!(path = %path.display(), "streaming logs: {e}");
        let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
    }
}

async fn stream_inner(
    file: tokio::fs::File,
    path: &Path,
    opts: &LogOptions,
    liveness: &impl ContainerLiveness,
    tx: &mpsc::Sender<Result<Bytes, io::Error>>,
) -> Result<(), LogError> {
    let mut filter = LogFilter::new(opts);
    let mut reader = BufReader::new(file);
    let mut line: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut watcher: Option<LogWatcher> = None;
    // Cleared once the container is seen stopped: one more read to the end, then done.
    let mut running = true;
    // The path names a new file (rotated): switch once the open one is read to its end.
    let mut switch_pending = false;
    let read_err = |source| LogError::Read {
        path: path.to_path_buf(),
        source,
    };
    loop {
        if filter.done() {
            break;
        }
        let n = reader
            .read_until(b'\n', &mut line)
            .await
            .map_err(read_err)?;
        if n > 0 && line.last() == Some(&b'\n') {
            let flow = filter.line(&line, &mut out);
            line.clear();
            if flow == Flow::Done {
                break;
            }
            if out.len() >= CHUNK && !send(tx, &mut out).await {
                return Ok(());
            }
            continue;
        }
        // At the end of the file (`line` may hold an incomplete last line).
        if !opts.follow {
            if !line.is_empty() {
                filter.line(&line, &mut out);
            }
            break;
        }
        if !send(tx, &mut out).await {
            return Ok(());
        }
        // The old file is read to its end: go on in the new one.
        if switch_pending {
            switch_pending = false;
            match tokio::fs::File::open(path).await {
                Ok(f) => {
                    reader = BufReader::new(f);
                    line.clear();
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(LogError::Open {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        }
        if !running {
            break;
        }
        let Some(w) = watcher.as_mut() else {
            watcher = Some(LogWatcher::new(path)?);
            // Written between the read and the watch: look again before waiting.
            continue;
        };
        if !liveness.running().await {
            running = false;
            switch_pending = w.replaced(reader.get_ref()).await;
            continue;
        }
        tokio::select! {
            _ = w.wait() => {}
            _ = tx.closed() => return Ok(()),
        }
        // A new file under the log's name (rotation): finish the old one first.
        switch_pending = w.replaced(reader.get_ref()).await;
    }
    send(tx, &mut out).await;
    Ok(())
}

/// Sends what is buffered; false when the receiver is gone.
async fn send(tx: &mpsc::Sender<Result<Bytes, io::Error>>, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return !tx.is_closed();
    }
    tx.send(Ok(Bytes::from(std::mem::take(out)))).await.is_ok()
}

/// inotify on the log's directory, for writes to and re-creation of the log file.
struct LogWatcher {
    fd: tokio::io::unix::AsyncFd<InotifyFd>,
    name: std::ffi::OsString,
    path: PathBuf,
}

/// `AsyncFd` wants `AsRawFd`, which nix's `Inotify` does not implement.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl LogWatcher {
    fn new(path: &Path) -> Result<LogWatcher, LogError> {
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let watch_err = |source| LogError::Watch {
            dir: dir.clone(),
            source,
        };
        let ino =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(watch_err)?;
        ino.add_watch(
            &dir,
            AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO,
        )
        .map_err(watch_err)?;
        // `AsyncFd::new` is deprecated because an arbitrary `AsRawFd` may close its fd while
        // registered; `InotifyFd` owns its fd and lives exactly as long as the `AsyncFd`, which
        // is what the unsafe `register` would ask us to promise.
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::new(InotifyFd(ino)).map_err(|e| LogError::Watch {
            dir: dir.clone(),
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
        Ok(LogWatcher {
            fd,
            name: path.file_name().unwrap_or_default().to_os_string(),
            path: path.to_path_buf(),
        })
    }

    /// Waits for the next event on the log file (written to, or a new file under its name), at
    /// most [`FORCE_CHECK_PERIOD`].
    async fn wait(&mut self) {
        let deadline = tokio::time::sleep(FORCE_CHECK_PERIOD);
        tokio::pin!(deadline);
        loop {
            let mut guard = tokio::select! {
                g = self.fd.readable() => match g {
                    Ok(g) => g,
                    Err(_) => return,
                },
                _ = &mut deadline => return,
            };
            match guard.get_inner().0.read_events() {
                Ok(events) => {
                    if events
                        .iter()
                        .any(|e| e.name.as_deref() == Some(self.name.as_os_str()))
                    {
                        return;
                    }
                }
                Err(nix::Error::EAGAIN) => guard.clear_ready(),
                Err(_) => return,
            }
        }
    }

    /// Whether the file at the log's path is no longer the one open (a rotation whose event
    /// was missed).
    async fn replaced(&self, open: &tokio::fs::File) -> bool {
        let (Ok(a), Ok(b)) = (open.metadata().await, tokio::fs::metadata(&self.path).await) else {
            return false;
        };
        a.ino() != b.ino() || a.dev() != b.dev()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn run(lines: &[&str], opts: &LogOptions) -> String {
        let mut f = LogFilter::new(opts);
        let mut out = Vec::new();
        for l in lines {
            if f.line(l.as_bytes(), &mut out) == Flow::Done {
                break;
            }
        }
        String::from_utf8(out).unwrap()
    }

    const LOG: &[&str] = &[
        "2026-01-01T00:00:01.5Z stdout F one\n",
        "2026-01-01T00:00:02Z stderr F two\n",
        "2026-01-01T00:00:03.000000100Z stdout P thr\n",
        "2026-01-01T00:00:03.2Z stdout F ee\n",
        "2026-01-01T00:00:04+02:00 stdout F four\n",
    ];

    #[test]
    fn parses_cri_records() {
        let r = parse_cri_line(b"2026-01-01T00:00:01.123456789Z stderr F hello world\n").unwrap();
        assert_eq!(r.stream, LogStream::Stderr);
        assert!(!r.partial);
        assert_eq!(r.log, b"hello world\n");
        assert_eq!(r.timestamp.timestamp_subsec_nanos(), 123_456_789);
        let p = parse_cri_line(b"2026-01-01T00:00:01Z stdout P:x part\n").unwrap();
        assert!(p.partial);
        assert_eq!(p.log, b"part");
        let empty = parse_cri_line(b"2026-01-01T00:00:01Z stdout F \n").unwrap();
        assert_eq!(empty.log, b"\n");
        for (bad, why) in [
            (&b"garbage"[..], "timestamp is not found"),
            (b"notatime stdout F x\n", "unexpected timestamp format"),
            (
                b"2026-01-01T00:00:01Z stdin F x\n",
                "unexpected stream type",
            ),
            (b"2026-01-01T00:00:01Z stdout\n", "stream type is not found"),
            (b"2026-01-01T00:00:01Z stdout F\n", "log tag is not found"),
        ] {
            let e = parse_cri_line(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn formats_like_go_rfc3339nano() {
        let f = |s: &str| format_rfc3339_nano(&DateTime::parse_from_rfc3339(s).unwrap());
        assert_eq!(
            f("2026-01-01T00:00:01.500000000Z"),
            "2026-01-01T00:00:01.5Z"
        );
        assert_eq!(f("2026-01-01T00:00:01Z"), "2026-01-01T00:00:01Z");
        assert_eq!(
            f("2026-01-01T00:00:01.000000001+05:30"),
            "2026-01-01T00:00:01.000000001+05:30"
        );
        assert_eq!(f("2026-01-01T00:00:01-01:00"), "2026-01-01T00:00:01-01:00");
    }

    #[test]
    fn joins_partial_records_and_keeps_both_streams() {
        assert_eq!(run(LOG, &LogOptions::default()), "one\ntwo\nthree\nfour\n");
    }

    #[test]
    fn timestamps_prefix_output_lines_only() {
        let opts = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            run(LOG, &opts),
            "2026-01-01T00:00:01.5Z one\n2026-01-01T00:00:02Z two\n\
             2026-01-01T00:00:03.0000001Z three\n2026-01-01T00:00:04+02:00 four\n"
        );
    }

    #[test]
    fn since_skips_older_records() {
        let opts = LogOptions {
            since: Some(ts("2026-01-01T00:00:02Z")),
            ..Default::default()
        };
        // 00:00:04+02:00 is 22:00:04 the day before: older.
        assert_eq!(run(LOG, &opts), "two\nthree\n");
        // sinceSeconds counts from now; the later of the two wins.
        let now = ts("2026-01-01T00:01:00Z");
        let o = LogOptions::new(
            None,
            None,
            Some(30),
            Some(ts("2026-01-01T00:00:10Z")),
            false,
            false,
            now,
        );
        assert_eq!(o.since, Some(ts("2026-01-01T00:00:30Z")));
        let o = LogOptions::new(
            None,
            None,
            Some(55),
            Some(ts("2026-01-01T00:00:10Z")),
            false,
            false,
            now,
        );
        assert_eq!(o.since, Some(ts("2026-01-01T00:00:10Z")));
    }

    #[test]
    fn limit_bytes_cuts_and_stops() {
        let opts = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(run(LOG, &opts), "one\ntw");
        let opts = LogOptions {
            limit_bytes: Some(4),
            ..Default::default()
        };
        assert_eq!(run(LOG, &opts), "one\n");
    }

    #[test]
    fn tail_counts_records_when_not_following() {
        let opts = LogOptions {
            tail: Some(2),
            ..Default::default()
        };
        assert_eq!(run(LOG, &opts), "one\ntwo\n");
        let opts = LogOptions {
            tail: Some(0),
            ..Default::default()
        };
        assert_eq!(run(LOG, &opts), "");
        // Following: the tail only picks the start point.
        let opts = LogOptions {
            tail: Some(1),
            follow: true,
            ..Default::default()
        };
        assert_eq!(run(LOG, &opts), "one\ntwo\nthree\nfour\n");
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let lines = ["not a record\n", "2026-01-01T00:00:01Z stdout F ok\n"];
        assert_eq!(run(&lines, &LogOptions::default()), "ok\n");
    }

    #[test]
    fn tail_start_is_found_backwards() {
        let text: String = (0..500).map(|i| format!("line {i}\n")).collect();
        let mut c = Cursor::new(text.as_bytes().to_vec());
        let at = |c: &mut Cursor<Vec<u8>>, n| {
            let start = find_tail_start(c, n).unwrap() as usize;
            text[start..].to_string()
        };
        assert_eq!(at(&mut c, 0), "");
        assert_eq!(at(&mut c, 1), "line 499\n");
        assert_eq!(at(&mut c, 3), "line 497\nline 498\nline 499\n");
        assert_eq!(at(&mut c, 200).lines().count(), 200);
        assert!(at(&mut c, 200).starts_with("line 300\n"));
        assert_eq!(at(&mut c, 500), text);
        assert_eq!(at(&mut c, 10_000), text);
        assert_eq!(at(&mut c, -1), text);
        // Only newlines are counted, as upstream: an unterminated last line comes on top.
        let mut c = Cursor::new(b"a\nb\nc".to_vec());
        assert_eq!(find_tail_start(&mut c, 1).unwrap(), 2);
        let mut c = Cursor::new(Vec::new());
        assert_eq!(find_tail_start(&mut c, 3).unwrap(), 0);
    }
}

#[cfg(test)]
mod follow_tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    struct Flag(Arc<AtomicBool>);

    impl ContainerLiveness for Flag {
        async fn running(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn append(path: &Path, lines: &[&str]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for l in lines {
            writeln!(f, "2026-01-01T00:00:00Z stdout F {l}").unwrap();
        }
    }

    async fn next(rx: &mut mpsc::Receiver<Result<Bytes, io::Error>>, got: &mut String, want: &str) {
        while !got.contains(want) {
            let chunk = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {want:?} in time; got {got:?}"))
                .unwrap_or_else(|| panic!("stream ended before {want:?}; got {got:?}"))
                .unwrap();
            got.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    #[tokio::test]
    async fn follows_growth_and_rotation_until_the_container_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        append(&path, &["one", "two", "three"]);
        let opts = LogOptions {
            tail: Some(1),
            follow: true,
            ..Default::default()
        };
        let (file, resolved) = open_log(&path, &opts).await.unwrap();
        let alive = Arc::new(AtomicBool::new(true));
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(stream_logs(file, resolved, opts, Flag(alive.clone()), tx));
        let mut got = String::new();
        next(&mut rx, &mut got, "three\n").await;
        assert_eq!(got, "three\n");
        append(&path, &["four"]);
        next(&mut rx, &mut got, "four\n").await;
        // Rotation: the live file is renamed and a new one takes its name.
        // What the runtime still wrote to the old file is read before the new one.
        let rotated = dir.path().join("0.log.20260101-000000");
        std::fs::rename(&path, &rotated).unwrap();
        append(&rotated, &["four-b"]);
        append(&path, &["five"]);
        next(&mut rx, &mut got, "five\n").await;
        append(&path, &["six"]);
        alive.store(false, Ordering::SeqCst);
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the stream ends once the container stopped")
        {
            got.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
        assert_eq!(got, "three\nfour\nfour-b\nfive\nsix\n");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn without_follow_the_stream_ends_at_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        append(&path, &["a", "b"]);
        let opts = LogOptions::default();
        let (file, resolved) = open_log(&path, &opts).await.unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        stream_logs(
            file,
            resolved,
            opts,
            Flag(Arc::new(AtomicBool::new(true))),
            tx,
        )
        .await;
        let mut got = String::new();
        while let Some(c) = rx.recv().await {
            got.push_str(std::str::from_utf8(&c.unwrap()).unwrap());
        }
        assert_eq!(got, "a\nb\n");
        assert!(
            open_log(&dir.path().join("missing.log"), &LogOptions::default())
                .await
                .unwrap_err()
                .to_string()
                .contains("missing.log")
        );
    }
}
