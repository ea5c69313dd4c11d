//! Text output: standard output, tables, times, JSON strings, charts, the
//! completeness line.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use titus_count::Snapshot;

use crate::Failure;

/// Standard output, buffered. `println!` panics when the reader has gone
/// (`titus-count totals | head -1`); here that is [`Failure::Closed`], which
/// ends the program quietly, and any other write error is a one-line failure.
pub struct Out {
    inner: BufWriter<io::Stdout>,
}

impl Out {
    pub fn new() -> Self {
        Out {
            inner: BufWriter::new(io::stdout()),
        }
    }

    /// Writes `text` as it is.
    pub fn text(&mut self, text: impl fmt::Display) -> Result<(), Failure> {
        write!(self.inner, "{text}").map_err(write_failure)
    }

    /// Writes `text` and a newline.
    pub fn line(&mut self, text: impl fmt::Display) -> Result<(), Failure> {
        writeln!(self.inner, "{text}").map_err(write_failure)
    }

    pub fn flush(&mut self) -> Result<(), Failure> {
        self.inner.flush().map_err(write_failure)
    }
}

fn write_failure(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure::Closed
    } else {
        Failure::Error(format!("cannot write to standard output: {e}"))
    }
}

/// A table with a header, left-aligned first column, right-aligned others.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row. Control characters in a cell (from a record another
    /// program wrote) are shown escaped, never sent to the terminal.
    pub fn row(&mut self, row: Vec<String>) {
        self.rows
            .push(row.into_iter().map(|cell| printable(&cell)).collect());
    }
}

/// `text` with its control characters escaped (`\u{1b}`), so it cannot
/// move the cursor or change the terminal.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self.rows[0].len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c == 0 {
                    line.push_str(&format!("{cell:<width$}", width = widths[c]));
                } else {
                    line.push_str(&format!("  {cell:>width$}", width = widths[c]));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// JSON string escaping, the same as the writer's instance records use.
pub use titus_count::__private::json_string;

/// What every view says: up to when the totals are complete.
pub fn complete_line(snapshot: &Snapshot) -> String {
    let c = &snapshot.completeness;
    let mut others = String::new();
    for (n, what) in [
        (c.exited, "exited"),
        (c.stale, "stale"),
        (c.unreadable, "unreadable"),
    ] {
        if n > 0 {
            others.push_str(&format!(", {n} {what}"));
        }
    }
    let live = format!(
        "{} live instance{}{others}",
        c.live,
        if c.live == 1 { "" } else { "s" }
    );
    match c.complete_up_to {
        None => format!("No live instance ({live}): the totals hold what was delivered."),
        Some(t) if c.settled => format!(
            "Settled: no live instance counted in its last interval ({live}); complete up to {}.",
            format_time(t)
        ),
        Some(t) => format!(
            "Complete up to {}: every count made before it is in ({live}).",
            format_time(t)
        ),
    }
}

/// A one-line bar chart of per-minute counts.
pub fn chart(stage: &str, values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0);
    let bars: String = values
        .iter()
        .map(|&v| {
            if max == 0 || v == 0 {
                ' '
            } else {
                BARS[((v as f64 / max as f64) * 7.0).round() as usize]
            }
        })
        .collect();
    format!("{stage}: |{bars}| max {max}/min")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(printable("web-1"), "web-1");
        assert_eq!(printable("a\u{1b}]0;x\u{7}b"), "a\\u{1b}]0;x\\u{7}b");
        let mut table = Table::new(&["host"]);
        table.row(vec!["evil\u{1b}[2J".to_owned()]);
        assert!(!table.to_string().contains('\u{1b}'));
    }

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_317_802);
        assert_eq!(format_time(t), "2026-12-03 17:10:02 UTC");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format_time(leap), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["stage", "total"]);
        t.row(vec!["a".into(), "1000".into()]);
        t.row(vec!["longer".into(), "5".into()]);
        assert_eq!(
            t.to_string(),
            "stage   total\na        1000\nlonger      5\n"
        );
    }
}
