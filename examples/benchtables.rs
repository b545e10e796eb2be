//! Renders BENCHMARKS.md's tables from the load generator's JSON results, so that every
//! figure in them has a command and a file behind it.
//!
//! ```text
//! cargo run --release --example benchtables -- bench/results/2026-11-28.jsonl BENCHMARKS.md
//! ```
//!
//! Each table sits between `<!-- table: NAME -->` and `<!-- /table -->` in the markdown file
//! and is replaced whole. A row is one command (as `loadtest` was run, without `--json` and
//! `--label`, which only say where results go); when the file holds several runs of it (rounds of a sitting), the row shows
//! their median and, in brackets, their range.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// A table: which results it shows, and which figures.
struct Table {
    name: &'static str,
    /// Whether a result belongs in the table.
    keep: fn(&Value) -> bool,
    /// `(header, field, decimals)`.
    columns: &'static [(&'static str, &'static str, usize)],
}

fn text(row: &Value, field: &str) -> String {
    row.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn number(row: &Value, field: &str) -> Option<f64> {
    row.get(field).and_then(Value::as_f64)
}

fn is(row: &Value, field: &str, value: f64) -> bool {
    number(row, field) == Some(value)
}

const LOAD: &[(&str, &str, usize)] = &[
    ("steps/s", "steps_per_s", 0),
    ("p50 ms", "p50_ms", 3),
    ("p99 ms", "p99_ms", 3),
    ("writes per batch", "writes_per_batch", 2),
    ("ms per batch", "ms_per_batch", 3),
];

const TABLES: &[Table] = &[
    Table {
        name: "low-concurrency",
        keep: |r| {
            text(r, "store") == "postgres"
                && is(r, "sagas", 2000.0)
                && is(r, "history", 0.0)
                && is(r, "step_ms", 0.0)
        },
        columns: LOAD,
    },
    Table {
        name: "history",
        keep: |r| {
            text(r, "run") == "library"
                && is(r, "concurrency", 8.0)
                && is(r, "sagas", 10000.0)
                && is(r, "step_ms", 0.0)
        },
        columns: LOAD,
    },
    Table {
        name: "throughput",
        keep: |r| {
            matches!(text(r, "run").as_str(), "library" | "baseline")
                && number(r, "concurrency").is_some_and(|c| c >= 1000.0)
                && is(r, "step_ms", 0.0)
        },
        columns: &[
            ("steps/s", "steps_per_s", 0),
            ("p50 ms", "p50_ms", 3),
            ("p99 ms", "p99_ms", 3),
            ("max RSS MiB", "max_rss_mb", 1),
        ],
    },
    Table {
        name: "memory",
        keep: |r| number(r, "step_ms").is_some_and(|ms| ms > 0.0),
        columns: &[
            (
                "heap KiB per in-flight saga",
                "heap_kib_per_inflight_saga",
                2,
            ),
            ("RSS KiB per in-flight saga", "rss_kib_per_inflight_saga", 2),
            ("max RSS MiB", "max_rss_mb", 1),
        ],
    },
    Table {
        name: "shapes",
        keep: is_shapes,
        columns: LOAD,
    },
    Table {
        name: "recovery",
        keep: |r| text(r, "run") == "recovery",
        columns: &[("seconds", "elapsed_s", 3), ("sagas/s", "sagas_per_s", 0)],
    },
];

/// Whether a result is of the shapes sitting (chain against fan-out), which only the
/// `shapes` table shows.
fn is_shapes(row: &Value) -> bool {
    text(row, "label").starts_with("shapes")
}

/// The command, as the load generator recorded it.
fn command(row: &Value) -> String {
    text(row, "command")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        f64::midpoint(values[mid - 1], values[mid])
    } else {
        values[mid]
    }
}

/// Thousands separated by commas, as the rest of the document writes them.
fn format(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, digits) = whole
        .strip_prefix('-')
        .map_or(("", whole), |digits| ("-", digits));
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if fraction.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{fraction}")
    }
}

fn render(table: &Table, results: &[Value]) -> String {
    // Rows by (command, run), in the order first seen.
    let mut order: Vec<(String, String)> = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    let shapes_only = table.name == "shapes";
    for row in results
        .iter()
        .filter(|r| (table.keep)(r) && (shapes_only || !is_shapes(r)))
    {
        let key = (command(row), text(row, "run"));
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(row);
    }
    let mut out = String::from("| command | run | runs |");
    for (header, _, _) in table.columns {
        let _ = write!(out, " {header} |");
    }
    out.push_str("\n|---|---|---|");
    out.push_str(&"---|".repeat(table.columns.len()));
    out.push('\n');
    for key in &order {
        let rows = &groups[key];
        let _ = write!(out, "| `{}` | {} | {} |", key.0, key.1, rows.len());
        for (_, field, decimals) in table.columns {
            let mut values: Vec<f64> = rows.iter().filter_map(|r| number(r, field)).collect();
            let cell = match values.len() {
                0 => "–".to_owned(),
                1 => format(values[0], *decimals),
                _ => {
                    let (low, high) = values
                        .iter()
                        .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
                    format!(
                        "**{}** ({}–{})",
                        format(median(&mut values), *decimals),
                        format(low, *decimals),
                        format(high, *decimals)
                    )
                }
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((markdown, inputs)) = args.split_last() else {
        return Err("usage: benchtables RESULTS.jsonl.. BENCHMARKS.md".into());
    };
    if inputs.is_empty() {
        return Err("usage: benchtables RESULTS.jsonl.. BENCHMARKS.md".into());
    }
    let mut results = Vec::new();
    for input in inputs {
        let content = std::fs::read_to_string(input).map_err(|e| format!("{input}: {e}"))?;
        for (n, line) in content.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value =
                serde_json::from_str(line).map_err(|e| format!("{input}:{}: {e}", n + 1))?;
            results.push(value);
        }
    }
    let mut document = std::fs::read_to_string(markdown).map_err(|e| format!("{markdown}: {e}"))?;
    for table in TABLES {
        let open = format!("<!-- table: {} -->\n", table.name);
        let close = "<!-- /table -->";
        let Some(start) = document.find(&open).map(|at| at + open.len()) else {
            continue;
        };
        let end = document[start..]
            .find(close)
            .map(|at| start + at)
            .ok_or_else(|| format!("{markdown}: table `{}` is not closed", table.name))?;
        document.replace_range(start..end, &render(table, &results));
    }
    std::fs::write(markdown, document).map_err(|e| format!("{markdown}: {e}"))
}
