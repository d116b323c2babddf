//! `logs`: print a container's log file, as the kubelet reads it.
//!
//! The runtime writes CRI log lines, `<RFC3339Nano> <stream> <P|F> <text>`;
//! `P` lines are parts of a longer line that the next `F` line ends. The
//! file's path comes from ContainerStatus, so this runs where hearthd does.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::containers;
use crate::client::Cri;

/// `logs`: print a container's logs.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The container (id or prefix).
    pub id: String,
    /// Keep printing what the container writes, until it exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Print only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Prefix each line with its timestamp.
    #[arg(short = 't', long)]
    pub timestamps: bool,
}

/// Which stream a line was written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

/// One whole line of the container's output.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    /// The time of its last part.
    pub timestamp: String,
    /// Where the container wrote it.
    pub stream: Stream,
    /// The text, partial lines joined, without the newline.
    pub text: String,
    /// False for a partial line left at the end of the file.
    pub complete: bool,
}

/// Joins `P` partials into whole lines, per stream.
#[derive(Default)]
pub struct LogParser {
    partial: HashMap<&'static str, String>,
}

impl LogParser {
    /// Feeds one line of the file (its newline removed). Returns a record when
    /// the line completes one. A line that is not in CRI format is returned
    /// as stdout text, so nothing the file holds is hidden.
    pub fn push(&mut self, line: &str) -> Option<Record> {
        let Some((timestamp, stream, tag, text)) = split_line(line) else {
            return Some(Record {
                timestamp: String::new(),
                stream: Stream::Stdout,
                text: line.to_string(),
                complete: true,
            });
        };
        let key = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        let buffered = self.partial.entry(key).or_default();
        buffered.push_str(text);
        // Tags are colon-separated; the first says partial or full.
        if tag.split(':').next() == Some("P") {
            return None;
        }
        Some(Record {
            timestamp: timestamp.to_string(),
            stream,
            text: std::mem::take(buffered),
            complete: true,
        })
    }

    /// Partial lines still waiting for their end (at the end of the file).
    pub fn finish(&mut self) -> Vec<Record> {
        let mut left: Vec<Record> = self
            .partial
            .drain()
            .filter(|(_, text)| !text.is_empty())
            .map(|(key, text)| Record {
                timestamp: String::new(),
                stream: if key == "stderr" {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                },
                text,
                complete: false,
            })
            .collect();
        left.sort_by_key(|r| r.stream == Stream::Stderr);
        left
    }
}

/// `<timestamp> <stream> <tag> <text>`; the text may be empty.
fn split_line(line: &str) -> Option<(&str, Stream, &str, &str)> {
    let mut parts = line.splitn(4, ' ');
    let timestamp = parts.next()?;
    let stream = match parts.next()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let tag = parts.next()?;
    if !(tag == "P" || tag == "F" || tag.starts_with("P:") || tag.starts_with("F:")) {
        return None;
    }
    if timestamp.is_empty() || !timestamp.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    Some((timestamp, stream, tag, parts.next().unwrap_or("")))
}

/// How a log is printed.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    /// Keep printing until the container exits.
    pub follow: bool,
    /// Only the last N lines (of what is there when it starts).
    pub tail: Option<usize>,
    /// Each line with its timestamp.
    pub timestamps: bool,
    /// Put before each line (`hearthctl run -f` names the container).
    pub prefix: String,
}

fn print_record(record: &Record, options: &LogOptions) -> std::io::Result<()> {
    let mut text = options.prefix.clone();
    if options.timestamps && !record.timestamp.is_empty() {
        text.push_str(&record.timestamp);
        text.push(' ');
    }
    text.push_str(&record.text);
    if record.complete {
        text.push('\n');
    }
    match record.stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()
        }
        Stream::Stderr => std::io::stderr().write_all(text.as_bytes()),
    }
}

/// How often a followed file is polled, and the container's state checked
/// every this many idle polls.
const POLL: Duration = Duration::from_millis(250);
const STATUS_EVERY: u32 = 4;

pub async fn logs(cri: &Cri, args: LogsArgs) -> Result<()> {
    let id = containers::resolve(cri, std::slice::from_ref(&args.id))
        .await?
        .remove(0);
    let options = LogOptions {
        follow: args.follow,
        tail: args.tail,
        timestamps: args.timestamps,
        prefix: String::new(),
    };
    print_log(cri, &id, &options).await
}

/// The container's log file, from its status.
pub async fn log_path(cri: &Cri, id: &str) -> Result<PathBuf> {
    let status = containers::status(cri, id).await?;
    let path = status
        .status
        .as_ref()
        .map(|s| PathBuf::from(&s.log_path))
        .unwrap_or_default();
    if path.as_os_str().is_empty() {
        bail!("container {id} has no log path (its config set no log_path)");
    }
    if path.is_relative() {
        bail!(
            "container {id} reports a relative log path {}",
            path.display()
        );
    }
    Ok(path)
}

/// Prints container `id`'s log (the whole container id), following it
/// until the container exits if asked to.
pub async fn print_log(cri: &Cri, id: &str, options: &LogOptions) -> Result<()> {
    let path = log_path(cri, id).await?;
    let mut reader = loop {
        match LogReader::open(&path).await {
            Ok(reader) => break reader,
            // A container just started may not have its log file yet.
            Err(err) if options.follow && is_not_found(&err) => {
                if containers::has_exited(cri, id).await? && !path.exists() {
                    return Ok(());
                }
                tokio::time::sleep(POLL).await;
            }
            Err(err) => return Err(err),
        }
    };
    let mut parser = LogParser::default();
    let mut tail: VecDeque<Record> = VecDeque::new();
    // First everything up to the end, keeping only --tail lines.
    while let Some(line) = reader.next_line().await? {
        if let Some(record) = parser.push(&line) {
            match options.tail {
                Some(n) => {
                    tail.push_back(record);
                    if tail.len() > n {
                        tail.pop_front();
                    }
                }
                None => print_record(&record, options)?,
            }
        }
    }
    for record in tail.drain(..) {
        print_record(&record, options)?;
    }
    if !options.follow {
        for record in parser.finish() {
            print_record(&record, options)?;
        }
        return Ok(());
    }

    let mut idle = 0;
    loop {
        match reader.next_line().await? {
            Some(line) => {
                idle = 0;
                if let Some(record) = parser.push(&line) {
                    print_record(&record, options)?;
                }
            }
            None => {
                idle += 1;
                if idle % STATUS_EVERY == 0 {
                    reader.reopen_if_rotated().await?;
                    if containers::has_exited(cri, id).await? {
                        // Drain what it wrote last, then stop.
                        while let Some(line) = reader.next_line().await? {
                            if let Some(record) = parser.push(&line) {
                                print_record(&record, options)?;
                            }
                        }
                        for record in parser.finish() {
                            print_record(&record, options)?;
                        }
                        return Ok(());
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

fn is_not_found(err: &anyhow::Error) -> bool {
    err.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// Reads whole lines from a log file that may still be growing or be
/// rotated under us.
struct LogReader {
    path: PathBuf,
    inode: u64,
    reader: BufReader<tokio::fs::File>,
    pending: Vec<u8>,
}

impl LogReader {
    async fn open(path: &Path) -> Result<Self> {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open log file {}", path.display()))?;
        let inode = file.metadata().await?.ino();
        Ok(LogReader {
            path: path.to_path_buf(),
            inode,
            reader: BufReader::new(file),
            pending: Vec::new(),
        })
    }

    /// The next whole line without its newline, or None at the end of the
    /// file for now (a line still being written waits in `pending`).
    async fn next_line(&mut self) -> Result<Option<String>> {
        self.reader.read_until(b'\n', &mut self.pending).await?;
        if self.pending.last() != Some(&b'\n') {
            return Ok(None);
        }
        self.pending.pop();
        let line = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Ok(Some(line))
    }

    /// Opens the file anew if the path now names another file (rotation).
    async fn reopen_if_rotated(&mut self) -> Result<()> {
        match tokio::fs::metadata(&self.path).await {
            Ok(meta) if meta.ino() != self.inode => {
                *self = LogReader::open(&self.path).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(stream: Stream, ts: &str, text: &str) -> Option<Record> {
        Some(Record {
            timestamp: ts.into(),
            stream,
            text: text.into(),
            complete: true,
        })
    }

    #[test]
    fn full_lines_give_their_text() {
        let mut p = LogParser::default();
        assert_eq!(
            p.push("2024-05-01T10:00:00.123456789Z stdout F hello world"),
            whole(
                Stream::Stdout,
                "2024-05-01T10:00:00.123456789Z",
                "hello world"
            )
        );
        assert_eq!(
            p.push("2024-05-01T10:00:01Z stderr F  two  spaces "),
            whole(Stream::Stderr, "2024-05-01T10:00:01Z", " two  spaces ")
        );
        // An empty line is "<ts> stdout F " (or without the last space).
        assert_eq!(
            p.push("2024-05-01T10:00:02Z stdout F "),
            whole(Stream::Stdout, "2024-05-01T10:00:02Z", "")
        );
        assert_eq!(
            p.push("2024-05-01T10:00:02Z stdout F"),
            whole(Stream::Stdout, "2024-05-01T10:00:02Z", "")
        );
    }

    #[test]
    fn partials_join_per_stream() {
        let mut p = LogParser::default();
        assert_eq!(p.push("2024-05-01T10:00:00Z stdout P abc"), None);
        assert_eq!(p.push("2024-05-01T10:00:00Z stderr P err-"), None);
        assert_eq!(p.push("2024-05-01T10:00:01Z stdout P def"), None);
        assert_eq!(
            p.push("2024-05-01T10:00:02Z stderr F or"),
            whole(Stream::Stderr, "2024-05-01T10:00:02Z", "err-or")
        );
        assert_eq!(
            p.push("2024-05-01T10:00:03Z stdout F ghi"),
            whole(Stream::Stdout, "2024-05-01T10:00:03Z", "abcdefghi")
        );
        // The buffer is empty again afterwards.
        assert_eq!(
            p.push("2024-05-01T10:00:04Z stdout F next"),
            whole(Stream::Stdout, "2024-05-01T10:00:04Z", "next")
        );
        assert!(p.finish().is_empty());
    }

    #[test]
    fn tags_after_a_colon_are_ignored() {
        let mut p = LogParser::default();
        assert_eq!(p.push("2024-05-01T10:00:00Z stdout P:x a"), None);
        assert_eq!(
            p.push("2024-05-01T10:00:00Z stdout F:x b"),
            whole(Stream::Stdout, "2024-05-01T10:00:00Z", "ab")
        );
    }

    #[test]
    fn unfinished_partials_come_out_at_the_end() {
        let mut p = LogParser::default();
        assert_eq!(p.push("2024-05-01T10:00:00Z stderr P e"), None);
        assert_eq!(p.push("2024-05-01T10:00:00Z stdout P half"), None);
        let left = p.finish();
        assert_eq!(left.len(), 2);
        assert_eq!(
            (left[0].stream, left[0].text.as_str()),
            (Stream::Stdout, "half")
        );
        assert_eq!(
            (left[1].stream, left[1].text.as_str()),
            (Stream::Stderr, "e")
        );
        assert!(!left[0].complete);
    }

    #[test]
    fn lines_not_in_cri_format_pass_through() {
        let mut p = LogParser::default();
        for raw in [
            "plain text",
            "2024-05-01T10:00:00Z stdin F x",
            "2024 stdout X y",
            "",
        ] {
            assert_eq!(p.push(raw), whole(Stream::Stdout, "", raw), "{raw:?}");
        }
    }

    #[tokio::test]
    async fn reader_waits_for_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "2024-05-01T10:00:00Z stdout F one\n2024-05-01T10:00:01Z stdout F tw",
        )
        .unwrap();
        let mut r = LogReader::open(&path).await.unwrap();
        assert_eq!(
            r.next_line().await.unwrap().as_deref(),
            Some("2024-05-01T10:00:00Z stdout F one")
        );
        assert_eq!(r.next_line().await.unwrap(), None);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"o\n").unwrap();
        assert_eq!(
            r.next_line().await.unwrap().as_deref(),
            Some("2024-05-01T10:00:01Z stdout F two")
        );
        // Rotation: the path now names a new file, read from its start.
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&path, "2024-05-01T10:00:02Z stdout F three\n").unwrap();
        assert_eq!(r.next_line().await.unwrap(), None);
        r.reopen_if_rotated().await.unwrap();
        assert_eq!(
            r.next_line().await.unwrap().as_deref(),
            Some("2024-05-01T10:00:02Z stdout F three")
        );
        let dir_path = dir.path().to_path_buf();
        dir.close().unwrap();
        assert!(!dir_path.exists());
    }
}
