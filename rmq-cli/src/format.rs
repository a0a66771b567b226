//! Text output: aligned tables, times, durations, shortened payloads; and the JSON forms of
//! times, durations and payloads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// A table printed with columns aligned; numbers right-aligned.
pub struct Table {
    header: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles; a title starting with `>` is right-aligned (the
    /// `>` is not printed).
    pub fn new(columns: &[&'static str]) -> Table {
        Table {
            header: columns
                .iter()
                .map(|c| c.strip_prefix('>').unwrap_or(c))
                .collect(),
            right: columns.iter().map(|c| c.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines, two spaces between columns, no trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(widths.len()) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(widths.len()) {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(widths[i].saturating_sub(cell.chars().count()));
                if self.right[i] {
                    line.push_str(&pad);
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Lines of `label  value` with the values aligned.
pub fn fields(rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(label, value)| format!("{label:width$}  {value}\n"))
        .collect()
}

/// A time as RFC 3339 in UTC with milliseconds: `2025-03-01T12:00:00.123Z`.
pub fn time(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// A time in JSON: its RFC 3339 text, or null.
pub fn json_time(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(time(t)))
}

/// A duration in milliseconds for JSON (fractional below 1 ms), or null.
pub fn json_ms(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| {
        serde_json::Number::from_f64((d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0)
            .map_or(Value::Null, Value::Number)
    })
}

/// A payload in JSON: the JSON value it holds, or its text when it is not JSON.
pub fn json_payload(payload: &str) -> Value {
    serde_json::from_str(payload).unwrap_or_else(|_| Value::String(payload.to_string()))
}

/// A short human duration: `850µs`, `12.3ms`, `4.56s`, `3m20s`; `-` for none.
pub fn short_duration(d: Option<Duration>) -> String {
    let Some(d) = d else { return "-".into() };
    let us = d.as_micros();
    if us < 1000 {
        format!("{us}µs")
    } else if us < 10_000 {
        format!("{:.2}ms", us as f64 / 1000.0)
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else if us < 60_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// `text` on one line, at most `max` characters (ending in `…` when cut).
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `n` and the noun, plural when `n != 1`: `1 dead letter`, `3 dead letters`.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Year, month, day of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_294_400_123); // 2024-03-01 12:00
        assert_eq!(time(t), "2024-03-01T12:00:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(time(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["NAME", ">N"]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["long name".into(), "100".into()]);
        assert_eq!(
            t.render(),
            "NAME         N\na            1\nlong name  100\n"
        );
    }

    #[test]
    fn short_forms() {
        assert_eq!(short_duration(Some(Duration::from_micros(850))), "850µs");
        assert_eq!(
            short_duration(Some(Duration::from_micros(12_345))),
            "12.3ms"
        );
        assert_eq!(short_duration(Some(Duration::from_secs(200))), "3m20s");
        assert_eq!(short_duration(None), "-");
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(count(1u64, "topic"), "1 topic");
        assert_eq!(
            json_ms(Some(Duration::from_micros(1500))),
            serde_json::json!(1.5)
        );
    }
}
