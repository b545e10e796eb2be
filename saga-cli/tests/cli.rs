#![allow(missing_docs, unreachable_pub, missing_debug_implementations)] // test code: the shared fixtures are `pub` for several crates
//! The built `saga` binary against SQLite and PostgreSQL databases filled by real saga runs
//! (a success, a compensation, a compensation that gave up, a parked saga and a stuck one):
//! its output, its exit codes, and the rows afterwards.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use saga_runtime::prelude::*;
use saga_runtime::{AuditRecord, SagaRecord};
use serde_json::Value;
use support::stores::{TempDir, postgres_url, unique};
use support::{Action, Gated, Held, Input, Pivoted, Script, Scripted};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn saga(url: &str, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_saga"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("USER", "tester")
        .output()
        .expect("run saga");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    println!(
        "$ saga {}\n{}{}(exit {})\n",
        args.join(" "),
        run.stdout,
        run.stderr,
        run.code
    );
    run
}

/// Expects success.
fn ok(url: &str, args: &[&str]) -> String {
    let run = saga(url, args);
    assert_eq!(run.code, 0, "saga {args:?} failed: {}", run.stderr);
    run.stdout
}

/// Expects one error line and exit code 1.
fn fails(url: &str, args: &[&str], expected: &str) {
    let run = saga(url, args);
    assert_eq!(run.code, 1, "saga {args:?} should fail");
    assert!(run.stdout.is_empty(), "nothing on stdout: {}", run.stdout);
    assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
    assert!(
        run.stderr.starts_with("error: ") && run.stderr.contains(expected),
        "{}",
        run.stderr
    );
}

/// Runs the five kinds of saga through the library, on the store the CLI will read.
async fn fill(store: Arc<dyn SagaStore>) {
    let script = Script::new();
    script.on("b", [Action::Permanent]);
    let orchestrator = Orchestrator::builder(store)
        .recovery(false)
        .build()
        .unwrap();
    let scripted = orchestrator.register(Scripted(script.clone()));
    let pivoted = orchestrator.register(Pivoted(script.clone()));
    let held = orchestrator.register(Held(script.clone()));
    let gated = orchestrator.register(Gated(script.clone()));
    let config = SagaConfig::new("orders")
        .user_id("u-1")
        .ip_address("10.0.0.9");
    // A compensation (b fails for good).
    assert_eq!(
        scripted
            .execute_with_id("comp-1", &config, Input { id: 1 })
            .await
            .unwrap()
            .state(),
        SagaState::Failed
    );
    // A success.
    assert!(
        scripted
            .execute_with_id("ok-1", &config, Input { id: 2 })
            .await
            .unwrap()
            .is_completed()
    );
    // A compensation that gives up.
    script.on("c", [Action::Permanent]);
    script.on("undo_b", [Action::Fail, Action::Fail]);
    assert_eq!(
        scripted
            .execute_with_id("cf-1", &config, Input { id: 3 })
            .await
            .unwrap()
            .state(),
        SagaState::CompensationFailed
    );
    // Parked past its pivot.
    script.on("c", [Action::Permanent]);
    assert_eq!(
        pivoted
            .execute_with_id("park-1", &SagaConfig::new("payments"), Input { id: 4 })
            .await
            .unwrap()
            .state(),
        SagaState::Parked
    );
    // Waiting for a day (and, below, overdue by two hours).
    assert_eq!(
        held.execute_with_id("wait-1", &SagaConfig::new("holds"), Input { id: 6 })
            .await
            .unwrap()
            .state(),
        SagaState::Waiting
    );
    // Waiting for a signal.
    assert_eq!(
        gated
            .execute_with_id("gate-1", &SagaConfig::new("gates"), Input { id: 7 })
            .await
            .unwrap()
            .state(),
        SagaState::Waiting
    );
    // Stuck: enqueued, and (below) not touched for two hours.
    assert!(
        scripted
            .enqueue("stuck-1", &config, Input { id: 5 })
            .await
            .unwrap()
    );
}

async fn load(store: &Arc<dyn SagaStore>, id: &str) -> SagaRecord {
    store.load(id).await.unwrap().unwrap()
}

async fn events(store: &Arc<dyn SagaStore>, id: &str, event_type: &str) -> Vec<AuditRecord> {
    store
        .audit_log(&AuditQuery::new().saga_id(id).event_type(event_type))
        .await
        .unwrap()
}

/// The whole session, on one backend. `age` backdates rows: `(table, column, where, hours)`.
// One operator session, command after command, as a person would type it.
#[allow(clippy::too_many_lines)]
async fn session<F, Fut>(url: &str, store: Arc<dyn SagaStore>, age: F)
where
    F: Fn(&'static str, &'static str, String, u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Before the migration: a clear refusal.
    fails(url, &["list"], "run `saga migrate`");
    let migrated = ok(url, &["migrate"]);
    assert!(
        migrated.contains("applied 20261125000001 create saga tables"),
        "{migrated}"
    );
    assert!(ok(url, &["migrate"]).contains("up to date"));

    fill(store.clone()).await;
    age(
        "saga_checkpoints",
        "updated_at",
        "saga_id = 'stuck-1'".into(),
        2,
    )
    .await;

    // list
    let list = ok(url, &["list"]);
    for id in ["ok-1", "comp-1", "cf-1", "park-1", "stuck-1"] {
        assert!(list.contains(id), "{id} missing from\n{list}");
    }
    assert!(list.starts_with("SAGA ID"));
    let failed = ok(url, &["list", "--state", "failed"]);
    assert!(
        failed.contains("comp-1") && !failed.contains("ok-1"),
        "{failed}"
    );
    let json: Value =
        serde_json::from_str(&ok(url, &["list", "--json", "--type", "payments"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["saga_id"], "park-1");
    assert_eq!(json[0]["state"], "parked");
    let limited: Value =
        serde_json::from_str(&ok(url, &["list", "--json", "--limit", "2"])).unwrap();
    assert_eq!(limited.as_array().unwrap().len(), 2);
    let recent: Value =
        serde_json::from_str(&ok(url, &["list", "--json", "--since", "10m"])).unwrap();
    assert_eq!(recent.as_array().unwrap().len(), 7);
    let run = saga(url, &["list", "--state", "exploded"]);
    assert_eq!(run.code, 2, "a usage error");
    assert!(run.stderr.contains("unknown saga state `exploded`"));

    // show
    let show = ok(url, &["show", "comp-1"]);
    assert!(show.contains("state      failed"), "{show}");
    assert!(show.contains("error      step `b`: b refused"), "{show}");
    let rows: Vec<&str> = show
        .lines()
        .skip_while(|l| *l != "steps")
        .skip(2)
        .take(3)
        .collect();
    // Name and status, before the RAN column (`+12µs → +3ms`).
    let steps: Vec<String> = rows
        .iter()
        .map(|l| {
            l.split_whitespace()
                .take_while(|w| !w.starts_with('+'))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        steps,
        ["a compensated", "b failed (attempt 1)", "c not_started"],
        "{show}"
    );
    // When each step ran; in a chain, no step ran with another.
    assert!(rows[0].contains(" → ") && rows[1].contains(" → "), "{show}");
    assert!(!rows[2].contains('→'), "{show}");
    for row in &rows[..2] {
        let after = row.split(" → ").nth(1).unwrap_or_default();
        assert_eq!(
            after.split_whitespace().count(),
            1,
            "only the end time: {row}"
        );
    }
    let row = list.lines().find(|l| l.starts_with("comp-1")).unwrap();
    assert_eq!(
        row.split_whitespace().nth(3),
        Some("b"),
        "the failed step, not the last one undone: {row}"
    );
    assert!(show.contains("timeline (8 events)"), "{show}");
    assert!(show.contains("compensation_executed"), "{show}");
    let shown: Value = serde_json::from_str(&ok(url, &["show", "cf-1", "--json"])).unwrap();
    assert_eq!(shown["state"], "compensation_failed");
    assert_eq!(shown["context"]["input"]["id"], 3);
    assert_eq!(shown["steps"][1]["step"], "b");
    assert_eq!(shown["steps"][1]["phase"], "compensating");
    assert_eq!(
        shown["events"].as_array().unwrap().last().unwrap()["event_type"],
        "saga_compensation_failed"
    );
    fails(url, &["show", "nope"], "saga `nope` not found");
    // A reader that went away (`saga show comp-1 | head -1`) ends the command quietly.
    let mut child = Command::new(env!("CARGO_BIN_EXE_saga"))
        .args(["show", "comp-1"])
        .env("DATABASE_URL", url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run saga");
    drop(child.stdout.take());
    let closed = child.wait_with_output().expect("saga ends");
    assert_eq!(
        (
            closed.status.code(),
            String::from_utf8_lossy(&closed.stderr).as_ref()
        ),
        (Some(0), ""),
        "no panic on a closed pipe"
    );

    // stuck
    let stuck = ok(url, &["stuck"]);
    assert!(
        stuck.contains("Stuck saga: stuck-1, updated_at:"),
        "{stuck}"
    );
    assert!(
        !stuck.contains("park-1") && !stuck.contains("ok-1"),
        "{stuck}"
    );
    assert!(ok(url, &["stuck", "--older-than", "3h"]).contains("no saga has been running"));
    // A wait due tomorrow is not overdue; one due two hours ago is.
    assert!(
        stuck.contains("no waiting saga is overdue by more than 1m"),
        "{stuck}"
    );
    let show = ok(url, &["show", "wait-1"]);
    assert!(
        show.contains("waiting") && show.contains("wakes") && show.contains("in 23h"),
        "{show}"
    );
    assert!(ok(url, &["list", "--state", "waiting"]).contains("wait-1"));
    age(
        "saga_checkpoints",
        "wake_at",
        "saga_id = 'wait-1'".into(),
        2,
    )
    .await;
    let overdue = ok(url, &["stuck"]);
    assert!(overdue.contains("Overdue wait: wait-1, due "), "{overdue}");
    assert!(overdue.contains("before step `release`"), "{overdue}");
    let json: Value = serde_json::from_str(&ok(url, &["stuck", "--json"])).unwrap();
    let stuck_states: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|row| row["state"].as_str())
        .collect();
    assert_eq!(stuck_states, ["running", "waiting"]);

    // signal: refused for an unknown name, a payload that is not JSON, a finished saga;
    // delivered once per key.
    fails(
        url,
        &["signal", "gate-1", "og", "--json", "1"],
        "saga `gate-1` accepts no signal `og`; it accepts go",
    );
    fails(
        url,
        &["signal", "gate-1", "go", "--json", "{seven"],
        "invalid signal: payload is not JSON",
    );
    fails(
        url,
        &["signal", "ok-1", "go", "--json", "1"],
        "saga `ok-1` is completed; cannot signal it",
    );
    fails(url, &["signal", "nobody", "go", "--json", "1"], "not found");
    let sent = ok(
        url,
        &["signal", "gate-1", "go", "--json", "35", "--key", "k-1"],
    );
    assert!(
        sent.starts_with("signal `go` delivered to saga gate-1 (signal "),
        "{sent}"
    );
    let again = ok(
        url,
        &["signal", "gate-1", "go", "--json", "36", "--key", "k-1"],
    );
    assert!(again.contains("was already sent with this key"), "{again}");
    let received = events(&store, "gate-1", "signal_received").await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].user_id.as_deref(), Some("tester"));
    assert_eq!(
        store
            .next_signal("gate-1", "go")
            .await
            .unwrap()
            .map(|s| s.payload),
        Some("35".to_owned())
    );

    // cancel: refused for a finished saga (and nothing changes), accepted for a running one.
    let before = load(&store, "ok-1").await;
    fails(
        url,
        &["cancel", "ok-1", "--reason", "too late"],
        "saga `ok-1` is completed; cannot cancel",
    );
    assert_eq!(load(&store, "ok-1").await, before);
    let cancel = ok(
        url,
        &[
            "cancel",
            "stuck-1",
            "--reason",
            "customer asked",
            "--user",
            "alice",
        ],
    );
    assert!(
        cancel.contains("cancellation of saga stuck-1 requested by alice"),
        "{cancel}"
    );
    assert_eq!(
        load(&store, "stuck-1").await.cancel_requested.as_deref(),
        Some("customer asked")
    );
    let rows = events(&store, "stuck-1", "cancel_requested").await;
    assert_eq!(
        (rows[0].user_id.as_deref(), rows[0].error_message.as_deref()),
        (Some("alice"), Some("customer asked"))
    );

    // resume
    let resumed = ok(
        url,
        &[
            "resume",
            "park-1",
            "--user",
            "bob",
            "--reason",
            "payment provider fixed",
        ],
    );
    assert!(
        resumed.contains("saga park-1 is runnable again (running at step `c`, attempt 0)"),
        "{resumed}"
    );
    let park = load(&store, "park-1").await;
    assert_eq!(
        (park.state, park.owner.as_deref(), park.attempt),
        (SagaState::Running, None, 0)
    );
    let rows = events(&store, "park-1", "operator_resumed").await;
    assert_eq!(rows[0].user_id.as_deref(), Some("bob"));
    assert_eq!(
        rows[0].error_message.as_deref(),
        Some("payment provider fixed")
    );
    fails(
        url,
        &["resume", "ok-1"],
        "saga `ok-1` is completed; cannot resume",
    );

    // fail
    let failed = ok(
        url,
        &[
            "fail",
            "cf-1",
            "--reason",
            "refunded by hand",
            "--user",
            "carol",
        ],
    );
    assert!(
        failed.contains("saga cf-1 marked failed by carol"),
        "{failed}"
    );
    let cf = load(&store, "cf-1").await;
    assert_eq!(
        (cf.state, cf.error.as_deref()),
        (SagaState::Failed, Some("refunded by hand"))
    );
    assert_eq!(
        events(&store, "cf-1", "operator_failed").await[0]
            .user_id
            .as_deref(),
        Some("carol")
    );
    fails(
        url,
        &["fail", "cf-1", "--reason", "again"],
        "cannot mark it failed",
    );
    fails(
        url,
        &["fail", "ghost", "--reason", "x"],
        "saga `ghost` not found",
    );

    // stats
    let stats = ok(url, &["stats"]);
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("orders") && l.contains("  2  ")),
        "{stats}"
    );
    assert!(stats.contains("failure rate"), "{stats}");
    let stats: Value =
        serde_json::from_str(&ok(url, &["stats", "--json", "--window", "1h"])).unwrap();
    let orders = stats["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["saga_type"] == "orders")
        .unwrap()
        .clone();
    assert_eq!(orders["states"]["failed"], 2);
    assert_eq!(orders["window"]["started"], 4);
    assert_eq!(orders["window"]["compensation_failed"], 1);

    // prune: nothing is 30 days old yet; then age some rows and prune them.
    assert!(
        ok(url, &["prune", "--older-than", "30d", "--dry-run"])
            .contains("would delete 0 audit rows and 0 finished sagas")
    );
    age(
        "saga_checkpoints",
        "updated_at",
        "saga_id IN ('ok-1', 'comp-1', 'park-1')".into(),
        24 * 40,
    )
    .await;
    age(
        "saga_audit_logs",
        "timestamp",
        "saga_id IN ('ok-1', 'comp-1')".into(),
        24 * 40,
    )
    .await;
    let dry = ok(url, &["prune", "--older-than", "30d", "--dry-run"]);
    assert!(
        dry.contains("would delete 16 audit rows and 2 finished sagas"),
        "{dry}"
    );
    assert!(store.load("ok-1").await.unwrap().is_some());
    let done = ok(url, &["prune", "--older-than", "30d", "--user", "dora"]);
    assert!(
        done.contains("deleted 16 audit rows and 2 finished sagas"),
        "{done}"
    );
    assert!(store.load("ok-1").await.unwrap().is_none());
    assert!(store.load("comp-1").await.unwrap().is_none());
    assert!(
        store.load("park-1").await.unwrap().is_some(),
        "unfinished sagas stay"
    );
    let pruned = events(&store, "*", "operator_pruned").await;
    assert_eq!(pruned[0].user_id.as_deref(), Some("dora"));

    // undo: refused unless completed; a completed saga is handed to the runners.
    fails(
        url,
        &["undo", "park-1", "--reason", "x"],
        "saga `park-1` is running; cannot undo it (only a completed saga can be undone)",
    );
    let orchestrator = Orchestrator::builder(store.clone())
        .recovery(false)
        .build()
        .unwrap();
    let scripted = orchestrator.register(Scripted(Script::new()));
    let done = scripted
        .execute_with_id("done-9", &SagaConfig::new("orders"), Input { id: 9 })
        .await
        .unwrap();
    assert!(done.is_completed());
    let undo = ok(
        url,
        &["undo", "done-9", "--reason", "sent back", "--user", "erin"],
    );
    assert!(
        undo.starts_with("undo of saga done-9 requested by erin;"),
        "{undo}"
    );
    // (It also takes over `stuck-1`, cancelled above and runnable since.)
    assert!(orchestrator.recover_expired().await.unwrap() >= 1);
    let undone = load(&store, "done-9").await;
    assert_eq!(
        (undone.state, undone.error.as_deref()),
        (SagaState::Failed, Some("undone: sent back"))
    );
    assert_eq!(
        events(&store, "done-9", "saga_undone").await[0]
            .user_id
            .as_deref(),
        Some("erin")
    );

    // Bad input: one clear line, exit 1.
    fails("mysql://somewhere/db", &["list"], "invalid database URL");
    fails(
        "postgres://postgres:secret@127.0.0.1:1/none",
        &["list"],
        "cannot open postgres://postgres:***@127.0.0.1:1/none",
    );
    let run = Command::new(env!("CARGO_BIN_EXE_saga"))
        .arg("list")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("no database"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_on_sqlite() {
    let dir = TempDir::new("cli");
    let path = dir.0.join("sagas.db");
    let url = format!("sqlite://{}", path.display());
    fails(&url, &["list"], "does not exist; run `saga migrate`");
    // The CLI creates and migrates the file; the application opens it after.
    let _ = ok(&url, &["migrate"]);
    let store = SqliteStore::open(&path).await.unwrap();
    let pool = store.pool().clone();
    // A second, fresh database for the session (it starts unmigrated).
    let fresh = dir.0.join("fresh.db");
    let fresh_url = format!("sqlite://{}", fresh.display());
    std::fs::File::create(&fresh).unwrap();
    let fresh_store = saga_runtime::store::SqliteStore::builder(fresh_url.as_str())
        .migrate(false)
        .connect()
        .await
        .unwrap();
    let fresh_pool = fresh_store.pool().clone();
    drop(store);
    drop(pool);
    session(&fresh_url, Arc::new(fresh_store), |table, column, filter, hours| {
        let pool = fresh_pool.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET {column} = strftime('%Y-%m-%d %H:%M:%f000', 'now', '-{hours} hours') WHERE {filter}"
            )))
            .execute(&pool)
            .await
            .unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_on_postgres() {
    let Some(base) = postgres_url() else { return };
    let schema = format!("saga_cli_{}", unique());
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&admin)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options[search_path]={schema}");
    let store = PostgresStore::builder(url.clone())
        .migrate(false)
        .pool_size(2)
        .connect()
        .await
        .unwrap();
    let pool = store.pool().clone();
    session(&url, Arc::new(store), |table, column, filter, hours| {
        let pool = pool.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET {column} = now() - interval '{hours} hours' WHERE {filter}"
            )))
            .execute(&pool)
            .await
            .unwrap();
        }
    })
    .await;
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
}

#[test]
fn durations_are_human() {
    let run = saga("sqlite::memory:", &["stuck", "--older-than", "soon"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("invalid value 'soon'"),
        "{}",
        run.stderr
    );
    let _ = Duration::ZERO;
}
