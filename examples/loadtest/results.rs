//! A run's figures, printed as one line of `key=value` text and, with `--json`, appended to
//! a file as one JSON object per line, with the arguments that produced them.

use std::io::Write as _;

use serde_json::{Value, json};

use super::{Args, Report, max_rss_mb, percentile};

/// Prints (and with `--json`, records) the figures of `report`; returns its steps per second.
pub(crate) fn emit(run: &str, args: &Args, report: &Report) -> Result<f64, String> {
    let prefix = if run == "library" { "" } else { "baseline " };
    let figures = figures(args, report);
    let heap = figures
        .iter()
        .find(|(key, _)| *key == "heap_kib_per_inflight_saga")
        .and_then(|(_, value)| value.as_f64());
    record(run, prefix, args, figures)?;
    match (args.max_heap_kib, heap) {
        (Some(max), Some(heap)) if heap > max => {
            return Err(format!(
                "{heap:.2} KiB of heap per in-flight saga, over --max-heap-kib {max}"
            ));
        }
        (Some(_), None) => {
            return Err("--max-heap-kib needs --step-ms (sagas held in flight)".into());
        }
        _ => {}
    }
    let secs = report.elapsed.as_secs_f64().max(f64::EPSILON);
    Ok((args.sagas * args.steps) as f64 / secs)
}

/// Prints `figures` as one `key=value` line after `prefix` and, with `--json`, appends
/// them to the file with the run's arguments.
pub(crate) fn record(
    run: &str,
    prefix: &str,
    args: &Args,
    figures: Vec<(&'static str, Value)>,
) -> Result<(), String> {
    let text: Vec<String> = figures
        .iter()
        // No history is the usual case: left out of the line, as before it existed.
        .filter(|(key, value)| !(value.is_null() || (*key == "history" && *value == json!(0))))
        .map(|(key, value)| match value {
            Value::String(text) => format!("{key}={text}"),
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() => format!("{key}={f:.*}", precision(key)),
                _ => format!("{key}={n}"),
            },
            other => format!("{key}={other}"),
        })
        .collect();
    println!("{prefix}{}", text.join(" "));
    let Some(path) = &args.json else {
        return Ok(());
    };
    let mut object = serde_json::Map::new();
    object.insert("label".into(), json!(args.label));
    object.insert("run".into(), json!(run));
    object.insert("command".into(), json!(command()));
    object.insert("concurrency".into(), json!(args.concurrency));
    object.insert("fail_rate".into(), json!(args.fail_rate));
    object.insert("audit".into(), json!(args.audit));
    object.insert("writers".into(), json!(args.writers));
    object.insert("step_ms".into(), json!(args.step_ms));
    object.insert("unix_time".into(), json!(unix_time()));
    for (key, value) in figures {
        object.insert(key.into(), value);
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(file, "{}", Value::Object(object)).map_err(|e| format!("{}: {e}", path.display()))
}

/// Decimals shown in the text line.
fn precision(key: &str) -> usize {
    match key {
        "sagas_per_s" | "steps_per_s" | "orphans_per_s" => 0,
        "max_rss_mb" => 1,
        "writes_per_batch" | "heap_kib_per_inflight_saga" | "rss_kib_per_inflight_saga" => 2,
        _ => 3,
    }
}

/// The figures, in the order of the text line; `null` ones are left out of it.
fn figures(args: &Args, report: &Report) -> Vec<(&'static str, Value)> {
    let secs = report.elapsed.as_secs_f64().max(f64::EPSILON);
    let steps = args.sagas * args.steps;
    let in_flight = args.concurrency.min(args.sagas).max(1) as f64;
    // Only meaningful when steps hold sagas in flight long enough to be sampled (--step-ms):
    // live heap bytes per in-flight saga (the load generator's own task included).
    let (heap_per_saga, rss_per_saga) = if args.step_ms > 0 {
        (
            (report.inflight_heap_peak > 0).then(|| {
                report.inflight_heap_peak.saturating_sub(report.heap_before) as f64
                    / 1024.0
                    / in_flight
            }),
            (report.inflight_peak_mb > 0.0).then(|| {
                (report.inflight_peak_mb - report.rss_before_mb).max(0.0) * 1024.0 / in_flight
            }),
        )
    } else {
        (None, None)
    };
    let (batches, writes_per_batch, ms_per_batch) = match report.commits {
        Some((batches, writes, busy)) if batches > 0 => (
            Some(batches),
            Some(writes as f64 / batches as f64),
            Some(busy.as_secs_f64() * 1000.0 / batches as f64),
        ),
        _ => (None, None, None),
    };
    vec![
        ("store", json!(format!("{:?}", args.store).to_lowercase())),
        ("sagas", json!(args.sagas)),
        ("steps", json!(steps)),
        ("shape", json!(format!("{:?}", args.shape).to_lowercase())),
        ("history", json!(args.history)),
        ("elapsed_s", json!(secs)),
        ("sagas_per_s", json!(args.sagas as f64 / secs)),
        ("steps_per_s", json!(steps as f64 / secs)),
        ("p50_ms", json!(percentile(&report.latencies, 0.50))),
        ("p95_ms", json!(percentile(&report.latencies, 0.95))),
        ("p99_ms", json!(percentile(&report.latencies, 0.99))),
        ("max_rss_mb", json!(max_rss_mb())),
        ("heap_kib_per_inflight_saga", heap_per_saga.into()),
        ("rss_kib_per_inflight_saga", rss_per_saga.into()),
        ("batches", batches.into()),
        ("writes_per_batch", writes_per_batch.into()),
        ("ms_per_batch", ms_per_batch.into()),
    ]
}

/// The command line, as typed, without the options that only say where results go.
fn command() -> String {
    let mut words = std::env::args().skip(1);
    let mut kept = vec!["loadtest".to_owned()];
    while let Some(word) = words.next() {
        if word == "--json" || word == "--label" {
            words.next();
        } else if !word.starts_with("--json=") && !word.starts_with("--label=") {
            kept.push(word);
        }
    }
    kept.join(" ")
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
