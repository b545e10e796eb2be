//! Faults from outside the process: a runner frozen past its lease (split brain), and a
//! SQLite file locked by another process. Both use real second processes: this test
//! binary started again in a helper role (see `helper_process`).
//!
//! The PostgreSQL restart has its own binary (`tests/pg_restart.rs`): it takes the server
//! away from every other test running beside it.

mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use saga_runtime::SagaError;
use saga_runtime::prelude::*;
use support::stores::{Backend, Harness, POSTGRES_URL_VAR, TempDir};
use support::watched::{Sink, Watched, unix_ms};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

const ROLE_VAR: &str = "SAGA_FAULT_HELPER";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    n: u32,
}

/// Three steps; in the stalled runner, `b` takes long enough to be frozen in.
pub struct Brain {
    slow_b: Option<Duration>,
}

#[saga(name = "split_brain", input = Job)]
impl Brain {
    #[step(timeout = 60, retries = 0)]
    async fn a(&self) -> Result<u32, StepError> {
        Ok(1)
    }

    // An attempt cut short by a crash or a takeover counts: one retry lets B run it again.
    #[step(timeout = 60, retries = 1)]
    async fn b(&self) -> Result<u32, StepError> {
        if let Some(slow) = self.slow_b {
            println!("in-b");
            tokio::time::sleep(slow).await;
        }
        Ok(2)
    }

    #[step(timeout = 60, retries = 0)]
    async fn c(&self) -> Result<u32, StepError> {
        println!("ran-c");
        Ok(3)
    }
}

// ---------------------------------------------------------------------------------------
// Helper processes
// ---------------------------------------------------------------------------------------

/// The entry point of the helper processes that the tests below start; not a test itself.
#[test]
#[ignore = "entry point of the helper processes started by the fault tests"]
fn helper_process() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    match std::env::var(ROLE_VAR).as_deref() {
        Ok("stalled-runner") => runtime.block_on(stalled_runner()),
        Ok("lock-sqlite") => runtime.block_on(lock_sqlite()),
        Ok("open-sqlite") => runtime.block_on(open_sqlite()),
        Ok("enqueue") => runtime.block_on(enqueue()),
        _ => eprintln!("{ROLE_VAR} is not set: nothing to do"),
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set for a helper"))
}

async fn open_store(backend: &str, location: &str) -> Arc<dyn SagaStore> {
    match backend {
        "sqlite" => Arc::new(SqliteStore::open(location).await.expect("open sqlite")),
        _ => Arc::new(
            PostgresStore::builder(env(POSTGRES_URL_VAR))
                .schema(location)
                .pool_size(2)
                .migrate(false)
                .connect()
                .await
                .expect("connect"),
        ),
    }
}

/// A runner that starts saga `split` and is frozen (SIGSTOP) inside step `b` by the test.
/// Every write it makes goes through a [`Watched`] store that prints what the database said:
/// `write <method> ok|rejected|error <ms sent>`, and `release <ms>`.
async fn stalled_runner() {
    let store = open_store(&env("SAGA_FAULT_STORE"), &env("SAGA_FAULT_LOCATION")).await;
    let printed: Sink = Arc::new(|method, verdict, sent| {
        if method == "release" {
            println!("release {sent}");
        } else {
            println!("write {method} {} {sent}", verdict.word());
        }
    });
    let orchestrator = Orchestrator::builder(Watched {
        inner: store,
        sink: printed,
        save_delay: Duration::ZERO,
    })
    .runner_id("stalled")
    .lease(Duration::from_secs(1))
    .recovery(false)
    .build()
    .expect("orchestrator");
    let executor = orchestrator.register(Brain {
        slow_b: Some(Duration::from_secs(3)),
    });
    let result = executor
        .execute_with_id("split", &SagaConfig::new("split"), Job { n: 1 })
        .await;
    match result {
        Ok(outcome) => println!("outcome {}", outcome.state()),
        Err(SagaError::LostOwnership { .. }) => println!("outcome lost-ownership"),
        Err(error) => println!("outcome error {error}"),
    }
    // Wait for a renewal round, so that the heartbeat's attempt is seen too.
    tokio::time::sleep(Duration::from_millis(700)).await;
    orchestrator.shutdown(Duration::from_millis(100)).await;
    println!("exit");
}

/// Holds an exclusive lock on a SQLite file for `SAGA_FAULT_HOLD_MS`.
async fn lock_sqlite() {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(env("SAGA_FAULT_LOCATION"))
        .busy_timeout(Duration::from_secs(30));
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("connect");
    let hold: u64 = env("SAGA_FAULT_HOLD_MS").parse().expect("hold");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut connection)
        .await
        .expect("lock");
    println!("locked");
    tokio::time::sleep(Duration::from_millis(hold)).await;
    sqlx::query("COMMIT")
        .execute(&mut connection)
        .await
        .expect("unlock");
    println!("unlocked {}", unix_ms());
}

/// Opens the SQLite file `SAGA_FAULT_LOCATION` at the moment `SAGA_FAULT_AT_MS` (UNIX
/// milliseconds), as a process starting beside others would, and says how it went.
async fn open_sqlite() {
    let at: u128 = env("SAGA_FAULT_AT_MS").parse().expect("at");
    tokio::time::sleep(Duration::from_millis(at.saturating_sub(unix_ms()) as u64)).await;
    match SqliteStore::open(env("SAGA_FAULT_LOCATION")).await {
        Ok(store) => match store.pending_migrations().await {
            Ok(pending) if pending.is_empty() => println!("opened"),
            Ok(pending) => println!("error: {} migrations pending", pending.len()),
            Err(error) => println!("error: reading the migrations: {error}"),
        },
        Err(error) => println!("error: opening: {error:?}"),
    }
}

/// Enqueues saga `inflight` on the PostgreSQL schema `SAGA_FAULT_LOCATION`, saying so
/// before and after (the test kills it in between).
async fn enqueue() {
    let store = open_store("postgres", &env("SAGA_FAULT_LOCATION")).await;
    let orchestrator = Orchestrator::builder(store)
        .runner_id("doomed")
        .recovery(false)
        .build()
        .expect("orchestrator");
    let executor = orchestrator.register(Brain { slow_b: None });
    println!("enqueueing");
    let created = executor
        .enqueue("inflight", &SagaConfig::new("split"), Job { n: 1 })
        .await;
    println!("enqueued {created:?}");
}

/// Starts this test binary again in `role`.
fn spawn_helper(role: &str, vars: &[(&str, String)]) -> (Child, Lines<BufReader<ChildStdout>>) {
    let exe = std::env::current_exe().expect("current exe");
    let mut command = tokio::process::Command::new(exe);
    command
        .args(["helper_process", "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(ROLE_VAR, role)
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in vars {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn helper");
    let stdout = child.stdout.take().expect("stdout");
    (child, BufReader::new(stdout).lines())
}

/// A helper's line without the test harness's `test helper_process ... ` before it (the
/// harness prints that without a line break, so the first line the helper prints follows
/// it).
fn clean(line: &str) -> &str {
    line.strip_prefix("test helper_process ... ")
        .unwrap_or(line)
}

/// Reads the helper's lines up to the first that starts with `prefix`; returns them all.
async fn wait_for(lines: &mut Lines<BufReader<ChildStdout>>, prefix: &str) -> Vec<String> {
    let wait = async {
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await.expect("read helper") {
            let line = clean(&line).to_owned();
            let found = line.starts_with(prefix);
            seen.push(line);
            if found {
                return seen;
            }
        }
        panic!("the helper ended before printing `{prefix}`: {seen:?}");
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("no `{prefix}` from the helper within 60 s"))
}

fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("helper pid").to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

// ---------------------------------------------------------------------------------------
// Split brain
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_on_sqlite() {
    split_brain(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_on_postgres() {
    split_brain(Backend::Postgres).await;
}

/// A runner frozen past its lease (SIGSTOP: its heartbeat stops too) loses the saga to a
/// second runner, which finishes it; when the first one wakes up, every write it attempts
/// is rejected and the database is exactly as the second runner left it.
async fn split_brain(backend: Backend) {
    let Some(h) = Harness::open(backend).await else {
        return;
    };
    let backend_name = if backend == Backend::Sqlite {
        "sqlite"
    } else {
        "postgres"
    };
    let location = h.location().expect("a database another process can open");
    let (mut stalled, mut lines) = spawn_helper(
        "stalled-runner",
        &[
            ("SAGA_FAULT_STORE", backend_name.to_owned()),
            ("SAGA_FAULT_LOCATION", location),
        ],
    );
    let before_stall = wait_for(&mut lines, "in-b").await;
    signal(&stalled, "-STOP");

    // Runner B waits out the lease (1 s), takes the saga over and finishes it.
    let rescuer = Orchestrator::builder(h.reopen())
        .runner_id("rescuer")
        .lease(Duration::from_secs(1))
        .recovery(false)
        .build()
        .unwrap();
    let executor = rescuer.register(Brain { slow_b: None });
    let outcome = loop {
        match executor.recover("split").await {
            Ok(outcome) => break outcome,
            Err(SagaError::Leased { owner, .. }) => {
                assert_eq!(owner.as_deref(), Some("stalled"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("takeover failed: {error}"),
        }
    };
    assert!(outcome.is_completed(), "{:?}", outcome.state());
    let taken_over = unix_ms();
    let row = h.raw_row("split").await;
    let audit = h
        .store
        .audit_log(&AuditQuery::new().saga_id("split"))
        .await
        .unwrap();
    let recovered = audit
        .iter()
        .filter(|e| e.event() == Some(saga_runtime::EventType::SagaRecovered))
        .count();
    assert_eq!(recovered, 1, "one takeover in the audit log");

    // Runner A wakes up: its step `b` ends, and it tries to write.
    signal(&stalled, "-CONT");
    let mut writes: Vec<String> = before_stall
        .iter()
        .filter_map(|line| line.strip_prefix("write ").map(str::to_owned))
        .collect();
    let mut outcome_line = None;
    let mut ran_c = false;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the stalled runner hangs")
        .expect("read helper")
    {
        let line = clean(&line);
        if let Some(write) = line.strip_prefix("write ") {
            writes.push(write.to_owned());
        } else if let Some(rest) = line.strip_prefix("outcome ") {
            outcome_line = Some(rest.to_owned());
        } else if line == "ran-c" {
            ran_c = true;
        }
    }
    assert!(stalled.wait().await.unwrap().success());
    assert_eq!(outcome_line.as_deref(), Some("lost-ownership"));
    assert!(!ran_c, "the stalled runner went on to step c");

    // Every write it attempted after the takeover was refused.
    let after: Vec<&String> = writes
        .iter()
        .filter(|w| {
            let at: u128 = w
                .rsplit(' ')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            at >= taken_over
        })
        .collect();
    assert!(
        after.iter().any(|w| w.starts_with("save rejected")),
        "the stalled runner never tried to checkpoint: {writes:?}"
    );
    assert!(
        after.iter().all(|w| w.contains(" rejected ")),
        "a write of the stalled runner got through: {after:?}"
    );
    assert!(
        writes.iter().any(|w| w.starts_with("save ok")),
        "its writes before the stall went through: {writes:?}"
    );
    // And nothing it did shows: the row and the audit log are as runner B left them.
    assert_eq!(h.raw_row("split").await, row);
    assert_eq!(
        h.store
            .audit_log(&AuditQuery::new().saga_id("split"))
            .await
            .unwrap(),
        audit
    );
    eprintln!(
        "split brain on {backend_name}: {} writes after the takeover, all rejected: {after:?}",
        after.len()
    );
    h.close().await;
}

// ---------------------------------------------------------------------------------------
// A locked SQLite file
// ---------------------------------------------------------------------------------------

/// Three slow steps: enough time for another process to lock the file under them.
pub struct Slow;

#[saga(name = "slow", input = Job)]
impl Slow {
    #[step(timeout = 60, retries = 0)]
    async fn one(&self, input: &Job) -> Result<u32, StepError> {
        tokio::time::sleep(Duration::from_millis(50 + u64::from(input.n % 7) * 30)).await;
        Ok(1)
    }

    #[step(timeout = 60, retries = 0)]
    async fn two(&self, input: &Job) -> Result<u32, StepError> {
        tokio::time::sleep(Duration::from_millis(80 + u64::from(input.n % 5) * 40)).await;
        Ok(2)
    }

    #[step(timeout = 60, retries = 0)]
    async fn three(&self) -> Result<u32, StepError> {
        Ok(3)
    }
}

/// A store on `path` whose SQLite busy handler gives up after 20 ms, so that a lock held
/// by another process surfaces as `SQLITE_BUSY` errors instead of being waited out inside
/// SQLite.
async fn impatient_store(path: &std::path::Path) -> SqliteStore {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_millis(20));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    let store = SqliteStore::from_pool(pool);
    store.migrate().await.unwrap();
    store
}

/// Runs 40 sagas while another process holds the file locked for 1.5 s; returns how many
/// ended in an error.
async fn run_under_lock(path: &std::path::Path, store_retry: Duration, tag: &str) -> usize {
    let store = impatient_store(path).await;
    let orchestrator = Orchestrator::builder(store)
        .runner_id(format!("runner-{tag}"))
        .store_retry(store_retry)
        .recovery(false)
        .build()
        .unwrap();
    let executor = orchestrator.register(Slow);
    let mut sagas = Vec::new();
    for n in 0..40 {
        let (executor, id) = (executor.clone(), format!("{tag}-{n}"));
        sagas.push(tokio::spawn(async move {
            executor
                .execute_with_id(id, &SagaConfig::new("slow"), Job { n })
                .await
        }));
    }
    let (mut locker, mut lines) = spawn_helper(
        "lock-sqlite",
        &[
            ("SAGA_FAULT_LOCATION", path.display().to_string()),
            ("SAGA_FAULT_HOLD_MS", "1500".into()),
        ],
    );
    wait_for(&mut lines, "locked").await;
    let mut errors = 0;
    for saga in sagas {
        match saga.await.unwrap() {
            Ok(outcome) => assert!(outcome.is_completed(), "{:?}", outcome.state()),
            Err(error) => {
                assert!(
                    matches!(&error, SagaError::Store(e) if e.is_transient()),
                    "{error}"
                );
                errors += 1;
            }
        }
    }
    wait_for(&mut lines, "unlocked").await;
    assert!(locker.wait().await.unwrap().success());
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_locked_by_another_process_is_waited_out() {
    let dir = TempDir::new("locked");
    let path = dir.0.join("sagas.db");
    // Without retries the lock fails sagas: this is what the test is sensitive to.
    let without = run_under_lock(&path, Duration::ZERO, "no-retry").await;
    assert!(without > 0, "the lock never reached a checkpoint write");
    // With retries (the default allows 15 s) every saga completes.
    let with = run_under_lock(&path, Duration::from_secs(15), "retry").await;
    assert_eq!(with, 0);
    eprintln!(
        "SQLite locked for 1.5 s under 40 sagas: {without} failed without store retries, {with} with them"
    );
    let store = impatient_store(&path).await;
    for n in 0..40 {
        let record = store.load(&format!("retry-{n}")).await.unwrap().unwrap();
        assert_eq!(record.state, SagaState::Completed);
    }
}

/// Processes that open one new SQLite file at the same moment all open it: the first
/// migrates it, the others wait for it and find nothing to do. (Migrating without a lock
/// failed 6 of 10 such pairs: `UNIQUE constraint failed: _saga_migrations.version`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_opening_a_new_sqlite_file_at_once_all_open_it() {
    let dir = TempDir::new("open-at-once");
    for round in 0..8 {
        let path = dir.0.join(format!("sagas-{round}.db"));
        let at = unix_ms() + 400;
        let mut helpers: Vec<_> = (0..3)
            .map(|_| {
                spawn_helper(
                    "open-sqlite",
                    &[
                        ("SAGA_FAULT_LOCATION", path.display().to_string()),
                        ("SAGA_FAULT_AT_MS", at.to_string()),
                    ],
                )
            })
            .collect();
        for (child, lines) in &mut helpers {
            let said = wait_for(lines, "opened").await;
            assert!(
                child.wait().await.unwrap().success(),
                "round {round}: {said:?}"
            );
        }
    }
}

/// A write its runner sent just before it was killed still lands: the server runs the
/// statement it received, and commits it, after the client is gone. Here the runner's
/// create waits, on the server, for a transaction that holds the same saga id uncommitted;
/// the runner is killed; the transaction rolls back, and the dead runner's create then
/// commits. Another runner finds the saga and runs it. (The crash harness once counted no
/// unfinished saga right after a kill, stopped recovering, and then found such a saga
/// running: RELIABILITY.md, "The crash harness".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_in_flight_when_its_runner_is_killed_lands_and_is_run() {
    let Some(harness) = Harness::open(Backend::Postgres).await else {
        return;
    };
    let support::stores::Raw::Postgres(pool) = &harness.raw else {
        unreachable!("a PostgreSQL harness")
    };
    let rescuer = Orchestrator::builder(harness.reopen())
        .runner_id("rescuer")
        .recovery(false)
        .build()
        .unwrap();
    let executor = rescuer.register(Brain { slow_b: None });
    let config = SagaConfig::new("split");
    // The id, taken by a transaction that does not commit yet.
    let mut holder = pool.begin().await.unwrap();
    assert!(
        executor
            .start_in_transaction(&mut holder, "inflight", &config, Job { n: 2 })
            .await
            .unwrap()
    );
    let location = harness.location().expect("a schema");
    let (mut doomed, mut lines) = spawn_helper("enqueue", &[("SAGA_FAULT_LOCATION", location)]);
    wait_for(&mut lines, "enqueueing").await;
    // Until its insert waits for the holder, on the server.
    let waiting = async {
        loop {
            let waiting: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    .fetch_one(pool)
                    .await
                    .unwrap();
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the create never reached the server");
    signal(&doomed, "-KILL");
    let _ = doomed.wait().await;
    assert!(harness.store.load("inflight").await.unwrap().is_none());
    holder.rollback().await.unwrap();
    let landed = async {
        loop {
            if let Some(record) = harness.store.load("inflight").await.unwrap() {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let record = tokio::time::timeout(Duration::from_secs(10), landed)
        .await
        .expect("the create of the killed runner never landed");
    assert_eq!(record.state, SagaState::Running);
    // The dead runner's saga (its input, not the holder's), run by another runner.
    let outcome = executor.recover("inflight").await.unwrap();
    assert!(outcome.is_completed(), "{:?}", outcome.state());
    assert_eq!(outcome.context().input.n, 1);
    rescuer.shutdown(Duration::from_secs(1)).await;
    harness.close().await;
}
