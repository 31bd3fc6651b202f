//! Reading a run file as the kubelet's `/containerLogs` does: the query's options, then tail,
//! since, stream, limit and timestamps, a chunk at a time so that a follower can come back.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// A query parameter of `/containerLogs` is unusable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A value is not of the parameter's type, or out of its range.
    #[error("invalid value {value:?} for query parameter {name}: want {expected}")]
    InvalidParam {
        name: String,
        value: String,
        expected: &'static str,
    },
    /// Both ways of saying "since" were given; the API server's validation forbids that too.
    #[error("at most one of sinceSeconds or sinceTime may be specified")]
    ConflictingSince,
}

/// Which pipe a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// The kubelet's `PodLogOptions`, as far as they reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    /// From `sinceTime`, or `sinceSeconds` before the time of the request.
    pub since: Option<Timestamp>,
    pub limit_bytes: Option<u64>,
    /// `None`: both streams (`stream=All`, the default).
    pub stream: Option<Stream>,
}

/// Go's `strconv.ParseBool`, which decodes the kubelet's boolean parameters.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn positive(value: &str) -> Option<u64> {
    value.parse().ok().filter(|v| *v > 0)
}

impl LogOptions {
    /// Parses a raw (percent-encoded) query string; unknown parameters are ignored.
    pub fn from_query(query: &str, now: Timestamp) -> Result<Self, Error> {
        let mut opts = Self::default();
        let (mut since_seconds, mut since_time) = (None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let invalid = |expected| Error::InvalidParam {
                name: key.to_string(),
                value: value.to_string(),
                expected,
            };
            let boolean = || parse_bool(&value).ok_or_else(|| invalid("a boolean"));
            match key.as_ref() {
                "follow" => opts.follow = boolean()?,
                "previous" => opts.previous = boolean()?,
                "timestamps" => opts.timestamps = boolean()?,
                // `tail` is the kubelet's older name; "all" means no limit.
                "tail" if value == "all" => opts.tail_lines = None,
                "tailLines" | "tail" => {
                    let lines = value.parse().map_err(|_| invalid("an integer >= 0"))?;
                    opts.tail_lines = Some(lines);
                }
                "sinceSeconds" => {
                    since_seconds = Some(positive(&value).ok_or_else(|| invalid("an integer > 0"))?)
                }
                "sinceTime" => {
                    let time: Timestamp = value.parse().map_err(|_| invalid("an RFC 3339 time"))?;
                    since_time = Some(time);
                }
                "limitBytes" => {
                    opts.limit_bytes =
                        Some(positive(&value).ok_or_else(|| invalid("an integer > 0"))?)
                }
                "stream" => {
                    opts.stream = match value.as_ref() {
                        "All" => None,
                        "Stdout" => Some(Stream::Stdout),
                        "Stderr" => Some(Stream::Stderr),
                        _ => return Err(invalid("All, Stdout or Stderr")),
                    }
                }
                _ => {}
            }
        }
        opts.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => return Err(Error::ConflictingSince),
            (Some(seconds), None) => {
                let back = SignedDuration::from_secs(i64::try_from(seconds).unwrap_or(i64::MAX));
                Some(now.checked_sub(back).unwrap_or(Timestamp::MIN))
            }
            (None, time) => time,
        };
        Ok(opts)
    }
}

/// One line of a run file: `<RFC 3339 time> <stdout|stderr> <P|F> <content>`, the CRI log
/// format; `P` marks a piece of a line too long for one record, continued in the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a [u8],
    pub stream: Stream,
    pub partial: bool,
    pub content: &'a [u8],
}

/// A record as a line of a run file, newline included.
pub fn format_record(time: Timestamp, stream: Stream, partial: bool, content: &[u8]) -> Vec<u8> {
    let tag = if partial { 'P' } else { 'F' };
    // Nine fraction digits, so that `--timestamps` output lines up.
    let mut line = format!("{time:.9} {} {tag} ", stream.as_str()).into_bytes();
    line.extend_from_slice(content);
    line.push(b'\n');
    line
}

/// A run-file line without its newline, or `None` when it is not a record.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = parts.next()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Record {
        time,
        stream,
        partial,
        content: parts.next().unwrap_or_default(),
    })
}

impl Record<'_> {
    pub fn timestamp(&self) -> Option<Timestamp> {
        std::str::from_utf8(self.time).ok()?.parse().ok()
    }
}

/// Bytes read backwards per step when looking for the tail.
const TAIL_STEP: usize = 8192;

/// Where the last `n` complete lines start. A last line without its newline is a record still
/// being written: it is no line yet, and where it starts is the answer for `n = 0`.
pub fn tail_offset<R: Read + Seek>(file: &mut R, n: u64) -> io::Result<u64> {
    tail_offset_by(file, n, TAIL_STEP)
}

fn tail_offset_by<R: Read + Seek>(file: &mut R, n: u64, step: usize) -> io::Result<u64> {
    let mut pos = file.seek(SeekFrom::End(0))?;
    let mut buf = vec![0; step];
    let mut seen_last = false;
    let mut found = 0;
    while pos > 0 {
        let start = pos.saturating_sub(step as u64);
        let size = (pos - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..size])?;
        for i in (0..size).rev().filter(|i| buf[*i] == b'\n') {
            let after = start + i as u64 + 1;
            // The newline that ends the last complete line only marks where lines end.
            if !std::mem::replace(&mut seen_last, true) {
                if n == 0 {
                    return Ok(after);
                }
                continue;
            }
            found += 1;
            if found == n {
                return Ok(after);
            }
        }
        pos = start;
    }
    Ok(0)
}

/// Run-file bytes read per step; a record is at most `capture::MAX_RECORD` plus its prefix.
const READ_STEP: usize = 64 * 1024;

/// Renders a run file's records from a position on; each call picks up what was appended since.
#[derive(Debug)]
pub struct LogReader {
    file: File,
    pos: u64,
    opts: LogOptions,
    written: u64,
}

impl LogReader {
    /// Opens `path` at the start of its last `tailLines` lines (or at its start).
    pub fn open(path: &Path, opts: LogOptions) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let pos = match opts.tail_lines {
            Some(n) => tail_offset(&mut file, n)?,
            None => 0,
        };
        Ok(Self {
            file,
            pos,
            opts,
            written: 0,
        })
    }

    /// `limitBytes` were written: nothing more will be.
    pub fn is_exhausted(&self) -> bool {
        self.opts.limit_bytes.is_some_and(|l| self.written >= l)
    }

    /// The output for the complete records appended since the last call, about `READ_STEP`
    /// bytes at most; empty when there are none yet.
    pub fn read_more(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0; READ_STEP];
        while out.len() < READ_STEP && !self.is_exhausted() {
            self.file.seek(SeekFrom::Start(self.pos))?;
            let n = read_up_to(&mut self.file, &mut buf)?;
            let Some(last) = buf[..n].iter().rposition(|b| *b == b'\n') else {
                if n == buf.len() {
                    // No record is this long: skip what cannot be one.
                    self.pos += n as u64;
                    continue;
                }
                break;
            };
            for line in buf[..last].split(|b| *b == b'\n') {
                self.render(line, &mut out);
            }
            self.pos += last as u64 + 1;
            if n < buf.len() {
                break;
            }
        }
        Ok(out)
    }

    fn render(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let Some(record) = parse_record(line) else {
            return;
        };
        if self.is_exhausted() || self.opts.stream.is_some_and(|s| s != record.stream) {
            return;
        }
        if let Some(since) = self.opts.since
            && record.timestamp().is_none_or(|t| t < since)
        {
            return;
        }
        let start = out.len();
        if self.opts.timestamps {
            out.extend_from_slice(record.time);
            out.push(b' ');
        }
        out.extend_from_slice(record.content);
        if !record.partial {
            out.push(b'\n');
        }
        if let Some(limit) = self.opts.limit_bytes {
            let room = usize::try_from(limit - self.written).unwrap_or(usize::MAX);
            out.truncate(start + room.min(out.len() - start));
        }
        self.written += (out.len() - start) as u64;
    }
}

/// Reads until `buf` is full or the end of the file.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(read) => n += read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn now() -> Timestamp {
        "2026-01-02T03:04:05Z".parse().unwrap()
    }

    #[test]
    fn no_query_means_everything_once_without_timestamps() {
        assert_eq!(
            LogOptions::from_query("", now()).unwrap(),
            LogOptions::default()
        );
    }

    #[test]
    fn the_api_servers_parameters_are_decoded() {
        let query = "follow=true&previous=1&timestamps=True&tailLines=10&limitBytes=500\
                     &sinceTime=2026-01-01T00%3A00%3A00Z&stream=Stderr&insecureSkipTLSVerifyBackend=true";
        let opts = LogOptions::from_query(query, now()).unwrap();
        assert_eq!(
            opts,
            LogOptions {
                follow: true,
                previous: true,
                timestamps: true,
                tail_lines: Some(10),
                since: Some("2026-01-01T00:00:00Z".parse().unwrap()),
                limit_bytes: Some(500),
                stream: Some(Stream::Stderr),
            }
        );
    }

    #[test]
    fn since_seconds_counts_back_from_the_request() {
        let opts = LogOptions::from_query("sinceSeconds=65", now()).unwrap();
        assert_eq!(opts.since, Some("2026-01-02T03:03:00Z".parse().unwrap()));
    }

    #[test]
    fn the_legacy_tail_parameter_and_its_all() {
        let opts = |q| LogOptions::from_query(q, now()).unwrap().tail_lines;
        assert_eq!(opts("tail=3"), Some(3));
        assert_eq!(opts("tailLines=3&tail=all"), None);
        assert_eq!(opts("tailLines=0"), Some(0));
    }

    #[test]
    fn bad_values_are_refused_naming_the_parameter() {
        let err = |q| LogOptions::from_query(q, now()).unwrap_err().to_string();
        assert_eq!(
            err("follow=yes"),
            r#"invalid value "yes" for query parameter follow: want a boolean"#
        );
        assert!(err("tailLines=-1").contains("tailLines"));
        assert!(err("limitBytes=0").contains("limitBytes"));
        assert!(err("sinceSeconds=0").contains("sinceSeconds"));
        assert!(err("sinceTime=yesterday").contains("sinceTime"));
        assert!(err("stream=both").contains("stream"));
        assert_eq!(
            LogOptions::from_query("sinceSeconds=1&sinceTime=2026-01-01T00:00:00Z", now()),
            Err(Error::ConflictingSince)
        );
    }

    #[test]
    fn records_round_trip() {
        let line = format_record(now(), Stream::Stderr, true, b"a b  c");
        assert_eq!(line, b"2026-01-02T03:04:05.000000000Z stderr P a b  c\n");
        let record = parse_record(&line[..line.len() - 1]).unwrap();
        assert_eq!(record.stream, Stream::Stderr);
        assert!(record.partial);
        assert_eq!(record.content, b"a b  c");
        assert_eq!(record.timestamp(), Some(now()));
        let empty = format_record(now(), Stream::Stdout, false, b"");
        assert_eq!(
            parse_record(&empty[..empty.len() - 1]).unwrap().content,
            b""
        );
        assert_eq!(parse_record(b"garbage"), None);
        assert_eq!(parse_record(b"t stdout X x"), None);
    }

    #[test]
    fn tail_finds_the_last_complete_lines_across_read_steps() {
        let text = b"one\ntwo\nthree\nfour\nfive\nhalf-writ";
        for step in [1, 2, 3, 5, 8192] {
            let tail = |n| {
                let offset = tail_offset_by(&mut Cursor::new(text), n, step).unwrap() as usize;
                String::from_utf8_lossy(&text[offset..]).into_owned()
            };
            assert_eq!(tail(0), "half-writ", "step {step}");
            assert_eq!(tail(1), "five\nhalf-writ", "step {step}");
            assert_eq!(tail(2), "four\nfive\nhalf-writ", "step {step}");
            assert_eq!(tail(5), String::from_utf8_lossy(text), "step {step}");
            assert_eq!(tail(9), String::from_utf8_lossy(text), "step {step}");
        }
        assert_eq!(tail_offset(&mut Cursor::new(b"a\nb\n"), 1).unwrap(), 2);
        assert_eq!(tail_offset(&mut Cursor::new(b"a\nb\n"), 0).unwrap(), 4);
        assert_eq!(tail_offset(&mut Cursor::new(b""), 3).unwrap(), 0);
    }

    /// A run file in a fresh temporary directory, removed on drop.
    struct RunFile(std::path::PathBuf);

    impl RunFile {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("node-agent-read-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("0.log");
            std::fs::write(&path, "").unwrap();
            Self(path)
        }

        fn append(&self, at: &str, stream: Stream, partial: bool, content: &str) {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.0)
                .unwrap();
            let time = at.parse().unwrap();
            file.write_all(&format_record(time, stream, partial, content.as_bytes()))
                .unwrap();
        }

        fn read(&self, query: &str) -> String {
            let opts = LogOptions::from_query(query, now()).unwrap();
            let mut reader = LogReader::open(&self.0, opts).unwrap();
            String::from_utf8(reader.read_more().unwrap()).unwrap()
        }
    }

    impl Drop for RunFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    fn sample(name: &str) -> RunFile {
        let file = RunFile::new(name);
        file.append("2026-01-02T03:00:00Z", Stream::Stdout, false, "starting");
        file.append("2026-01-02T03:01:00Z", Stream::Stderr, true, "long ");
        file.append("2026-01-02T03:01:00Z", Stream::Stderr, false, "warning");
        file.append("2026-01-02T03:02:00Z", Stream::Stdout, false, "ready");
        file
    }

    #[test]
    fn pieces_of_a_long_line_are_joined_and_streams_filtered() {
        let file = sample("streams");
        assert_eq!(file.read(""), "starting\nlong warning\nready\n");
        assert_eq!(file.read("stream=Stdout"), "starting\nready\n");
        assert_eq!(file.read("stream=Stderr"), "long warning\n");
    }

    #[test]
    fn tail_since_timestamps_and_limit_combine() {
        let file = sample("options");
        assert_eq!(file.read("tailLines=1"), "ready\n");
        // Records count as lines: a long line's pieces are two.
        assert_eq!(file.read("tailLines=2"), "warning\nready\n");
        assert_eq!(
            file.read("sinceTime=2026-01-02T03:01:00Z"),
            "long warning\nready\n"
        );
        assert_eq!(file.read("sinceSeconds=150"), "ready\n");
        assert_eq!(
            file.read("timestamps=true&tailLines=1"),
            "2026-01-02T03:02:00.000000000Z ready\n"
        );
        assert_eq!(file.read("limitBytes=11"), "starting\nlo");
        assert_eq!(file.read("tailLines=0"), "");
    }

    #[test]
    fn a_follower_gets_only_what_was_appended_and_never_half_a_record() {
        let file = sample("follow");
        let opts = LogOptions::from_query("tailLines=1&limitBytes=16", now()).unwrap();
        let mut reader = LogReader::open(&file.0, opts).unwrap();
        assert_eq!(reader.read_more().unwrap(), b"ready\n");
        assert!(reader.read_more().unwrap().is_empty());
        let mut raw = std::fs::OpenOptions::new()
            .append(true)
            .open(&file.0)
            .unwrap();
        raw.write_all(b"2026-01-02T03:03:00Z stdout F next")
            .unwrap();
        assert!(reader.read_more().unwrap().is_empty(), "record incomplete");
        raw.write_all(b"\n").unwrap();
        assert_eq!(reader.read_more().unwrap(), b"next\n");
        assert!(!reader.is_exhausted());
        file.append(
            "2026-01-02T03:04:00Z",
            Stream::Stdout,
            false,
            "beyond limit",
        );
        assert_eq!(reader.read_more().unwrap(), b"beyon");
        assert!(reader.is_exhausted());
    }
}
