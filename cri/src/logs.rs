//! The CRI container log format and its rotation.
//!
//! Every line a container writes to stdout or stderr becomes one record
//! `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>\n` in the file the kubelet named in
//! `ContainerConfig.log_path` (kubelet's `pkg/kubelet/kuberuntime/logs` parses exactly this).
//! A line longer than the maximum is cut into `P` (partial) records followed by one `F` (full)
//! record, as containerd's CRI plugin does with `max_container_log_line_size` (16 KiB).
//!
//! Rotation follows the kubelet's `container_log_manager`: the live file is renamed to
//! `<log>.<YYYYMMDD-HHMMSS>` and a new one is opened; at most `max_files` files (the live one
//! included) are kept, oldest removed first. The kubelet gzips older rotated files; we keep them
//! plain. `ReopenContainerLog` (after an external rotation) is [`LogFile::reopen`].
//!
//! Pure byte handling lives here; the supervisor owns the pipes and calls in.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// containerd's default `max_container_log_line_size`.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

/// The kubelet's rotated-file timestamp layout (Go `20060102-150405`).
const ROTATE_SUFFIX_FORMAT: &str = "%Y%m%d-%H%M%S";

/// Which pipe a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Go's `time.RFC3339Nano` in UTC: nanoseconds with trailing zeros trimmed, `Z` offset.
pub fn format_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let dt = chrono::DateTime::<chrono::Utc>::from(UNIX_EPOCH + d);
    let mut s = dt.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Encodes one record.
pub fn encode_record(t: SystemTime, stream: Stream, partial: bool, content: &[u8]) -> Vec<u8> {
    let ts = format_timestamp(t);
    let mut out = Vec::with_capacity(ts.len() + content.len() + 12);
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.push(if partial { b'P' } else { b'F' });
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// Cuts a byte stream into lines: complete lines (newline stripped) and, for over-long lines,
/// partial chunks of at most `max` bytes.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max: max.max(1),
        }
    }

    /// Feeds bytes; `emit(content, partial)` is called for each finished record.
    pub fn push(&mut self, mut data: &[u8], emit: &mut dyn FnMut(&[u8], bool)) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.append(&data[..nl], emit);
                    emit(&self.buf, false);
                    self.buf.clear();
                    data = &data[nl + 1..];
                }
                None => {
                    self.append(data, emit);
                    data = &[];
                }
            }
        }
    }

    fn append(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(&[u8], bool)) {
        while self.buf.len() + bytes.len() > self.max {
            let take = self.max - self.buf.len();
            self.buf.extend_from_slice(&bytes[..take]);
            emit(&self.buf, true);
            self.buf.clear();
            bytes = &bytes[take..];
        }
        self.buf.extend_from_slice(bytes);
    }

    /// At end of stream: a pending unterminated line is written as a partial record, as
    /// containerd does for output that does not end in a newline.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8], bool)) {
        if !self.buf.is_empty() {
            emit(&self.buf, true);
            self.buf.clear();
        }
    }
}

/// One container's CRI log file with size-based rotation.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    file: File,
    size: u64,
}

impl LogFile {
    /// Opens (appending) `path`; `max_size == 0` disables rotation.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<Self> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            max_size,
            max_files,
            file,
            size,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record, rotating first when it would push the file past `max_size`.
    pub fn write_record(
        &mut self,
        t: SystemTime,
        stream: Stream,
        partial: bool,
        content: &[u8],
    ) -> io::Result<()> {
        let rec = encode_record(t, stream, partial, content);
        if self.max_size > 0 && self.size > 0 && self.size + rec.len() as u64 > self.max_size {
            self.rotate(t)?;
        }
        self.file.write_all(&rec)?;
        self.size += rec.len() as u64;
        Ok(())
    }

    /// Opens the path again (ReopenContainerLog: someone renamed the file away).
    pub fn reopen(&mut self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = file;
        Ok(())
    }

    fn rotate(&mut self, t: SystemTime) -> io::Result<()> {
        let stamp = chrono::DateTime::<chrono::Utc>::from(t)
            .format(ROTATE_SUFFIX_FORMAT)
            .to_string();
        let mut target = suffixed(&self.path, &stamp);
        let mut n = 1;
        while target.exists() {
            target = suffixed(&self.path, &format!("{stamp}.{n}"));
            n += 1;
        }
        fs::rename(&self.path, &target)?;
        self.reopen()?;
        self.remove_excess()
    }

    /// Keeps at most `max_files - 1` rotated files beside the live one.
    fn remove_excess(&self) -> io::Result<()> {
        let keep = self.max_files.max(1) as usize - 1;
        let mut rotated = rotated_files(&self.path)?;
        rotated.sort();
        while rotated.len() > keep {
            let oldest = rotated.remove(0);
            let _ = fs::remove_file(oldest);
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// The rotated siblings of `path` (`<log>.<anything>`).
pub fn rotated_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn timestamps_match_go_rfc3339nano() {
        assert_eq!(format_timestamp(at(0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_timestamp(at(1_700_000_000, 120_000_000)),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(
            format_timestamp(at(1_700_000_000, 1)),
            "2023-11-14T22:13:20.000000001Z"
        );
    }

    #[test]
    fn records() {
        let r = encode_record(at(0, 5), Stream::Stderr, true, b"abc");
        assert_eq!(r, b"1970-01-01T00:00:00.000000005Z stderr P abc\n");
    }

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut emit = |c: &[u8], p: bool| out.push((String::from_utf8_lossy(c).into_owned(), p));
        for c in chunks {
            s.push(c, &mut emit);
        }
        s.finish(&mut emit);
        out
    }

    #[test]
    fn splitting() {
        let f = |s: &str, p| (s.to_owned(), p);
        assert_eq!(
            split(16, &[b"a\nb", b"c\n"]),
            vec![f("a", false), f("bc", false)]
        );
        assert_eq!(
            split(4, &[b"abcdefghij\n"]),
            vec![f("abcd", true), f("efgh", true), f("ij", false)]
        );
        // Exactly max bytes then a newline: one full line, no empty partial.
        assert_eq!(split(4, &[b"abcd\n"]), vec![f("abcd", false)]);
        assert_eq!(split(4, &[b"\n\n"]), vec![f("", false), f("", false)]);
        assert_eq!(split(4, &[b"tail"]), vec![f("tail", true)]);
    }

    #[test]
    fn rotation_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = LogFile::open(&path, 100, 3).unwrap();
        for i in 0..20 {
            log.write_record(
                at(1_700_000_000, i),
                Stream::Stdout,
                false,
                b"0123456789012345678901234567890123456789",
            )
            .unwrap();
        }
        let rotated = rotated_files(&path).unwrap();
        assert_eq!(rotated.len(), 2, "rotated: {rotated:?}");
        assert!(fs::metadata(&path).unwrap().len() <= 100);
        assert!(rotated[0]
            .to_string_lossy()
            .contains("c.log.20231114-221320"));
    }

    #[test]
    fn reopen_after_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = LogFile::open(&path, 0, 0).unwrap();
        log.write_record(at(0, 0), Stream::Stdout, false, b"one")
            .unwrap();
        fs::rename(&path, dir.path().join("c.log.old")).unwrap();
        log.reopen().unwrap();
        log.write_record(at(0, 0), Stream::Stdout, false, b"two")
            .unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "1970-01-01T00:00:00Z stdout F two\n"
        );
    }
}
