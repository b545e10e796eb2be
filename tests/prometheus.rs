//! The deploy files against the real thing: `promtool check rules` on the alerts,
//! `promtool check metrics` on a scrape of the web service, then a real Prometheus server
//! scraping the service every second while it runs successful and failing sagas, and every
//! PromQL expression of the dashboard and the alerts evaluated through its HTTP API.
//!
//! Needs `promtool` and `prometheus` (Debian's `prometheus` package; `.ci/run` installs
//! it). Without them the test says so and skips, except under CI, where it fails.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use saga_runtime::prelude::*;
use saga_suite::backtest::BacktestWorkflow;
use saga_suite::web;
use serde_json::Value;
use support::stores::TempDir;
use support::{Action, Input, Pivoted, Script, Scripted};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A minimal HTTP/1.0 client (no chunked encoding to handle): method, path and body.
async fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    try_http(addr, method, path, body)
        .await
        .expect("HTTP request")
}

async fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-User-Id: prom-test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn promql(prometheus: &str, query: &str) -> Value {
    let (status, body) = http(
        prometheus,
        "GET",
        &format!("/api/v1/query?query={}", encode(query)),
        "",
    )
    .await;
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(status, 200, "query {query:?} failed: {body}");
    assert_eq!(value["status"], "success", "query {query:?}: {body}");
    value
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Kills the Prometheus server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The metric names an expression reads (label names in `by (..)`, `on(..)` and `{..}` are
/// not metric names).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut cleaned = String::with_capacity(expr.len());
    let mut rest = expr;
    while !rest.is_empty() {
        let clause = ["by (", "by(", "on(", "on (", "{"]
            .iter()
            .filter_map(|open| rest.find(open).map(|at| (at, *open)))
            .min();
        let Some((at, open)) = clause else {
            cleaned.push_str(rest);
            break;
        };
        cleaned.push_str(&rest[..at]);
        let close = if open == "{" { '}' } else { ')' };
        rest = rest[at..]
            .find(close)
            .map_or("", |end| &rest[at + end + 1..]);
    }
    let expr = cleaned.as_str();
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(offset) = expr[i..].find("saga_") {
        let start = i + offset;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            names.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_work_against_a_real_prometheus() {
    let (Some(promtool), Some(prometheus_bin)) = (tool("promtool"), tool("prometheus")) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool and prometheus must be installed in CI (Debian package `prometheus`)"
        );
        eprintln!("note: promtool/prometheus not installed; skipping the Prometheus test");
        return;
    };

    // 1. The alert rules are valid.
    let rules = repo("deploy/prometheus/saga_alerts.yml");
    let check = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .unwrap();
    println!(
        "$ promtool check rules deploy/prometheus/saga_alerts.yml\n{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // 2. The web service, on a SQLite file, with the store gauges refreshed every second.
    let dir = TempDir::new("prometheus");
    let store = SqliteStore::open(dir.0.join("web.db")).await.unwrap();
    let app = web::app(
        store,
        BacktestWorkflow::new(3, false),
        Duration::from_secs(1),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = listener.local_addr().unwrap().to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(web::serve(listener, app.clone(), async {
        let _ = stop_rx.await;
    }));
    // Sagas that end in compensation_failed and parked, on the same orchestrator.
    let script = Script::new();
    script.on("c", [Action::Permanent, Action::Permanent]);
    script.on("undo_b", [Action::Fail, Action::Fail]);
    let scripted = app.orchestrator.register(Scripted(script.clone()));
    let pivoted = app.orchestrator.register(Pivoted(script.clone()));

    // 3. A real Prometheus scraping it every second, with the alert rules loaded.
    let data = TempDir::new("prometheus-data");
    let port = free_port();
    let prometheus = format!("127.0.0.1:{port}");
    let config = data.0.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: saga\n    static_configs:\n      - targets: ['{service}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let _prometheus = Server(
        Command::new(&prometheus_bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.0.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prometheus}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );

    // 4. Successful and failing sagas, while Prometheus scrapes.
    let started = Instant::now();
    let mut round = 0u32;
    // 20 rounds of ~0.3 s: Prometheus (scraping every second) has samples by then.
    let mut scraped = false;
    while started.elapsed() < Duration::from_secs(60) {
        round += 1;
        let (status, body) = http(&service, "POST", "/backtests", r#"{"strategy_id": 123}"#).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = http(&service, "POST", "/backtests", r#"{"strategy_id": 7}"#).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""status":"failed""#), "{body}");
        // Once Prometheus has its first samples, so that the counters visibly increase.
        if round == 20 {
            let cf = scripted
                .execute(&SagaConfig::new("scripted"), Input { id: 1 })
                .await
                .unwrap();
            assert_eq!(cf.state(), SagaState::CompensationFailed);
            let parked = pivoted
                .execute(&SagaConfig::new("pivoted"), Input { id: 2 })
                .await
                .unwrap();
            assert_eq!(parked.state(), SagaState::Parked);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if round.is_multiple_of(4)
            && started.elapsed() > Duration::from_secs(6)
            && let Ok(Ok((200, body))) = tokio::time::timeout(
                Duration::from_secs(2),
                try_http(
                    &prometheus,
                    "GET",
                    &format!(
                        "/api/v1/query?query={}",
                        encode("count_over_time(saga_started_total[1m])")
                    ),
                    "",
                ),
            )
            .await
        {
            let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let samples = value["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            if samples >= 5.0 {
                scraped = true;
                break;
            }
        }
    }
    assert!(
        scraped,
        "Prometheus did not scrape the service five times within a minute"
    );

    // 5. `promtool check metrics` on a real scrape.
    let (status, scrape) = http(&service, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    let mut lint = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), scrape.as_bytes()).unwrap();
    let lint = lint.wait_with_output().unwrap();
    println!(
        "$ curl -s /metrics | promtool check metrics\n{}{}(exit {})",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr),
        lint.status
    );
    assert!(lint.status.success());
    println!("scrape excerpt:");
    for line in scrape.lines().filter(|l| {
        !l.starts_with('#') && !l.contains("_bucket") && l.contains("backtest_workflow")
    }) {
        println!("  {line}");
    }

    // 6. Every dashboard expression returns data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/grafana/saga-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut names = BTreeSet::new();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 4);
    println!("dashboard queries:");
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            names.extend(metric_names(expr));
            let value = promql(&prometheus, expr).await;
            let result = value["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                !result.is_empty(),
                "panel {:?}: {expr} returned nothing",
                panel["title"]
            );
            let first = &result[0];
            println!(
                "  {:<40} {} series, e.g. {} = {}",
                panel["title"].as_str().unwrap_or_default(),
                result.len(),
                first["metric"],
                first["value"][1]
            );
        }
    }

    // 7. Every alert expression evaluates, and Prometheus loaded every rule.
    let alerts = std::fs::read_to_string(&rules).unwrap();
    let mut alert_exprs = Vec::new();
    let mut lines = alerts.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "expr: |"
            && let Some(expr) = lines.next()
        {
            alert_exprs.push(expr.trim().to_owned());
        }
    }
    assert_eq!(alert_exprs.len(), 7);
    println!("alert expressions:");
    for expr in &alert_exprs {
        names.extend(metric_names(expr));
        let value = promql(&prometheus, expr).await;
        println!(
            "  {expr:<70} -> {} series",
            value["data"]["result"].as_array().map_or(0, Vec::len)
        );
    }
    let (_, body) = http(&prometheus, "GET", "/api/v1/rules", "").await;
    let loaded: Value = serde_json::from_str(&body).unwrap();
    let rules_loaded: Vec<&Value> = loaded["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(rules_loaded.len(), 7);
    assert!(rules_loaded.iter().all(|r| r["health"] == "ok"), "{body}");

    // 8. Every metric any expression names has series.
    println!("metrics named by the expressions:");
    for name in &names {
        let value = promql(&prometheus, &format!("count({{__name__=\"{name}\"}})")).await;
        let count = value["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or("0")
            .to_owned();
        println!("  {name:<40} {count} series");
        assert_ne!(count, "0", "{name} has no series");
    }
    assert!(names.len() >= 12, "{names:?}");

    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    let _ = Arc::strong_count(&app);
}

#[test]
fn metric_names_are_read_from_expressions() {
    assert_eq!(
        metric_names(
            "topk(10, sum by (saga_type) (rate(saga_step_failed_total[5m]))) / saga_x{saga_type=\"saga_y\"} or on() vector(0)"
        ),
        ["saga_step_failed_total", "saga_x"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}
