//! The CRI log format the kubelet reads:
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <text>\n`. A line longer
//! than [`MAX_LINE`] is split into `P` (partial) pieces and a final `F`;
//! output that ends without a newline is written as a full line when the
//! stream ends (as containerd does).

use std::io::{self, Write};

/// Longest piece of one line in one log entry (containerd's 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// Which stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Formats ns since the epoch as Go's RFC3339Nano in UTC (trailing zeros
/// of the fraction trimmed, no fraction when it is zero).
pub fn rfc3339_nano(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Howard Hinnant's days → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Turns chunks of one container's output into CRI log entries.
#[derive(Debug)]
pub struct CriLogWriter<W: Write> {
    out: W,
    /// The unfinished line of each stream.
    pending: [Vec<u8>; 2],
}

impl<W: Write> CriLogWriter<W> {
    /// Writes to `out`.
    pub fn new(out: W) -> Self {
        CriLogWriter {
            out,
            pending: [Vec::new(), Vec::new()],
        }
    }

    fn entry(&mut self, time_ns: i64, stream: Stream, tag: &str, text: &[u8]) -> io::Result<()> {
        let mut line = Vec::with_capacity(text.len() + 48);
        line.extend_from_slice(rfc3339_nano(time_ns).as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.name().as_bytes());
        line.push(b' ');
        line.extend_from_slice(tag.as_bytes());
        line.push(b' ');
        line.extend_from_slice(text);
        line.push(b'\n');
        self.out.write_all(&line)
    }

    /// Adds a chunk read at `time_ns`.
    pub fn write(&mut self, time_ns: i64, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        let i = stream as usize;
        while !data.is_empty() {
            match data.iter().position(|b| *b == b'\n') {
                Some(n) => {
                    let mut line = std::mem::take(&mut self.pending[i]);
                    line.extend_from_slice(&data[..n]);
                    data = &data[n + 1..];
                    let mut rest = &line[..];
                    while rest.len() > MAX_LINE {
                        self.entry(time_ns, stream, "P", &rest[..MAX_LINE])?;
                        rest = &rest[MAX_LINE..];
                    }
                    self.entry(time_ns, stream, "F", rest)?;
                }
                None => {
                    self.pending[i].extend_from_slice(data);
                    data = &[];
                }
            }
            while self.pending[i].len() > MAX_LINE {
                let piece: Vec<u8> = self.pending[i].drain(..MAX_LINE).collect();
                self.entry(time_ns, stream, "P", &piece)?;
            }
        }
        self.out.flush()
    }

    /// The streams ended: unfinished lines are written as full lines.
    pub fn finish(&mut self, time_ns: i64) -> io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream as usize]);
            if !rest.is_empty() {
                self.entry(time_ns, stream, "F", &rest)?;
            }
        }
        self.out.flush()
    }

    /// Writes to `out` from now on (unfinished lines carry over); returns
    /// the old writer.
    pub fn set_output(&mut self, out: W) -> W {
        std::mem::replace(&mut self.out, out)
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_nano() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nano(1_700_000_000_123_400_000),
            "2023-11-14T22:13:20.1234Z"
        );
        assert_eq!(
            rfc3339_nano(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    fn lines(w: CriLogWriter<Vec<u8>>) -> Vec<String> {
        String::from_utf8(w.into_inner())
            .unwrap()
            .lines()
            .map(|l| l.split_once(' ').unwrap().1.to_owned())
            .collect()
    }

    #[test]
    fn lines_across_chunks_and_streams() {
        let mut w = CriLogWriter::new(Vec::new());
        w.write(1, Stream::Stdout, b"hel").unwrap();
        w.write(2, Stream::Stderr, b"oops\n").unwrap();
        w.write(3, Stream::Stdout, b"lo\nsecond\n\nlast").unwrap();
        w.finish(4).unwrap();
        assert_eq!(
            lines(w),
            [
                "stderr F oops",
                "stdout F hello",
                "stdout F second",
                "stdout F ",
                "stdout F last"
            ]
        );
    }

    #[test]
    fn long_lines_are_split() {
        let mut w = CriLogWriter::new(Vec::new());
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        w.write(1, Stream::Stdout, &long[..MAX_LINE + 3]).unwrap();
        w.write(1, Stream::Stdout, &long[MAX_LINE + 3..]).unwrap();
        w.write(1, Stream::Stdout, b"\n").unwrap();
        let l = lines(w);
        assert_eq!(l.len(), 3);
        assert!(l[0].starts_with("stdout P x") && l[0].len() == 9 + MAX_LINE);
        assert!(l[1].starts_with("stdout P x") && l[1].len() == 9 + MAX_LINE);
        assert_eq!(l[2], "stdout F xxxxx");
    }
}
