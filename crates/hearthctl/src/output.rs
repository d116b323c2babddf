//! Everything that turns CRI answers into text: crictl-style tables, relative
//! times, human sizes, truncated ids, and the json/yaml renderings.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// How a command prints its answer (`-o/--output`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The CRI response, pretty-printed JSON.
    Json,
    /// The CRI response as YAML.
    Yaml,
}

/// Length of a truncated id, as crictl shows them.
pub const SHORT_ID: usize = 13;

/// An id cut to [`SHORT_ID`] characters unless `no_trunc`; a `sha256:` prefix
/// is dropped first, as crictl does for image ids.
pub fn short_id(id: &str, no_trunc: bool) -> String {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    if no_trunc {
        id.to_string()
    } else {
        id.chars().take(SHORT_ID).collect()
    }
}

/// Columns aligned like crictl's tabwriter (minimum width 20, padding 3).
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    const MIN_WIDTH: usize = 20;
    const PADDING: usize = 3;

    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds one row; it should have as many cells as there are headers.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                let text = self
                    .rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0);
                (text + Self::PADDING).max(Self::MIN_WIDTH)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < row.len() {
                    let pad = widths[c] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// "2 minutes ago" for a CRI timestamp (nanoseconds since the epoch), worded
/// like crictl (docker's go-units `HumanDuration`). Zero means unknown.
pub fn relative_time(created_ns: i64, now: SystemTime) -> String {
    if created_ns <= 0 {
        return "unknown".to_string();
    }
    let created = UNIX_EPOCH + Duration::from_nanos(created_ns as u64);
    // A timestamp in the future (clock skew) reads as "just now".
    let age = now.duration_since(created).unwrap_or_default();
    format!("{} ago", human_duration(age))
}

/// go-units `HumanDuration`, which crictl uses for its CREATED column.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    match () {
        _ if seconds < 1 => "Less than a second".to_string(),
        _ if seconds == 1 => "1 second".to_string(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// A byte count in decimal units with three significant digits, like
/// crictl's SIZE column: `512B`, `4.1kB`, `72.8MB`, `1.21GB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit + 1 < UNITS.len() {
        size /= 1000.0;
        unit += 1;
    }
    let decimals = if size >= 100.0 {
        0
    } else if size >= 10.0 {
        1
    } else {
        2
    };
    let mut number = format!("{size:.decimals$}");
    if number.contains('.') {
        number = number
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string();
    }
    format!("{number}{}", UNITS[unit])
}

/// Parses a duration such as `10s`, `500ms`, `2m`, `1h`, or a bare number of
/// seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("invalid duration {text:?}: expected e.g. 10s, 500ms, 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => bail!("invalid duration {text:?}: unit must be ms, s, m or h"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// A duration as a person writes it: `10s`, `1.5s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Turns a CRI `info` map into JSON: values that hold a JSON object or array
/// (as runtimes put them there) are embedded as JSON, the rest stay strings.
pub fn info_to_json(info: &HashMap<String, String>) -> serde_json::Value {
    let mut keys: Vec<&String> = info.keys().collect();
    keys.sort();
    let map = keys
        .into_iter()
        .map(|k| {
            let raw = &info[k];
            let value = match serde_json::from_str::<serde_json::Value>(raw) {
                Ok(v) if v.is_object() || v.is_array() => v,
                _ => serde_json::Value::String(raw.clone()),
            };
            (k.clone(), value)
        })
        .collect();
    serde_json::Value::Object(map)
}

/// Whether an error is stdout's reader having gone away.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes to stdout. Unlike `print!` it does not panic when the reader has
/// gone (`hearthctl pods | head`): main ends quietly on that BrokenPipe.
pub fn write_out(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Prints a response as pretty JSON or YAML. Table output is the caller's.
pub fn print_structured<T: Serialize>(value: &T, output: Output) -> Result<()> {
    let text = match output {
        Output::Yaml => serde_yaml::to_string(value).context("cannot encode YAML")?,
        Output::Json | Output::Table => {
            serde_json::to_string_pretty(value).context("cannot encode JSON")? + "\n"
        }
    };
    write_out(&text)?;
    Ok(())
}

/// Matches `k=v` label filters against a label map.
pub fn labels_match(filters: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    filters.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Parses repeated `--label k=v` flags.
pub fn parse_labels(flags: &[String]) -> Result<HashMap<String, String>> {
    flags
        .iter()
        .map(|flag| match flag.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid --label {flag:?}: expected KEY=VALUE"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: i64 = 1_000_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn relative_time_reads_like_crictl() {
        let created = 1_700_000_000;
        let now = |after: u64| at(created + after);
        let ns = created as i64 * NS;
        assert_eq!(relative_time(ns, now(0)), "Less than a second ago");
        assert_eq!(relative_time(ns, now(1)), "1 second ago");
        assert_eq!(relative_time(ns, now(42)), "42 seconds ago");
        assert_eq!(relative_time(ns, now(90)), "About a minute ago");
        assert_eq!(relative_time(ns, now(150)), "2 minutes ago");
        assert_eq!(relative_time(ns, now(3600)), "About an hour ago");
        assert_eq!(relative_time(ns, now(5 * 3600)), "5 hours ago");
        assert_eq!(relative_time(ns, now(3 * 86400)), "3 days ago");
        assert_eq!(relative_time(ns, now(21 * 86400)), "3 weeks ago");
        assert_eq!(relative_time(ns, now(90 * 86400)), "3 months ago");
        assert_eq!(relative_time(ns, now(3 * 365 * 86400)), "3 years ago");
    }

    #[test]
    fn relative_time_handles_unknown_and_future() {
        assert_eq!(relative_time(0, at(100)), "unknown");
        assert_eq!(relative_time(200 * NS, at(100)), "Less than a second ago");
    }

    #[test]
    fn sizes_use_three_significant_digits() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_096), "4.1kB");
        assert_eq!(human_size(72_800_000), "72.8MB");
        assert_eq!(human_size(1_213_000_000), "1.21GB");
        assert_eq!(human_size(5_000_000), "5MB");
        assert_eq!(human_size(268_435_456), "268MB");
    }

    #[test]
    fn table_aligns_columns_like_crictl() {
        let mut t = Table::new(&["POD ID", "NAME", "NAMESPACE"]);
        t.push(vec![
            "0123456789abc".into(),
            "a-rather-long-pod-name-here".into(),
            "default".into(),
        ]);
        t.push(vec!["ff".into(), "demo".into(), "kube-system".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        // First column: min width 20; second: longest cell (27) + 3.
        assert_eq!(
            lines[0],
            format!("{:<20}{:<30}{}", "POD ID", "NAME", "NAMESPACE")
        );
        assert_eq!(
            lines[1],
            format!(
                "{:<20}{:<30}{}",
                "0123456789abc", "a-rather-long-pod-name-here", "default"
            )
        );
        assert!(lines[2].starts_with("ff                  demo"));
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn short_ids_drop_sha256_and_truncate() {
        let id = "sha256:0123456789abcdef0123";
        assert_eq!(short_id(id, false), "0123456789abc");
        assert_eq!(short_id(id, true), "0123456789abcdef0123");
        assert_eq!(short_id("abc", false), "abc");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn info_values_holding_json_are_expanded() {
        let info = HashMap::from([
            (
                "info".to_string(),
                r#"{"pid": 42, "vm": {"vcpus": 1}}"#.to_string(),
            ),
            ("note".to_string(), "plain text".to_string()),
            ("number".to_string(), "1.0".to_string()),
        ]);
        let v = info_to_json(&info);
        assert_eq!(v["info"]["vm"]["vcpus"], 1);
        assert_eq!(v["note"], "plain text");
        assert_eq!(v["number"], "1.0");
    }

    #[test]
    fn label_flags_parse_and_match() {
        let filters = parse_labels(&["app=web".into(), "tier=".into()]).unwrap();
        let labels = HashMap::from([
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), String::new()),
            ("extra".to_string(), "x".to_string()),
        ]);
        assert!(labels_match(&filters, &labels));
        assert!(!labels_match(&filters, &HashMap::new()));
        assert!(parse_labels(&["novalue".into()]).is_err());
        assert!(parse_labels(&["=v".into()]).is_err());
    }
}
