//! `saga`: inspect and operate the sagas of an application, over its database.
//!
//! The CLI cannot run user code: it changes rows (and writes an audit row naming who did it
//! and why), and the application's runners pick the work up.

#[macro_use]
mod output;
mod spans;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use saga_runtime::store::{NewSignal, PostgresStore, SagaQuery, Sent, SqliteStore, redact};
use saga_runtime::{Actor, AuditQuery, SagaState, SagaStore, StoreError};

/// Inspect and operate sagas stored in SQLite or PostgreSQL.
///
/// The CLI changes rows; the application's runners do the work (compensating a cancelled
/// saga, running a resumed one). Every action is written to the audit log with --user.
#[derive(Debug, Parser)]
#[command(name = "saga", version, about, long_about = None)]
struct Cli {
    /// `sqlite://FILE` or `postgres://USER@HOST/DB`.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Who is acting, for the audit log (default: the login name).
    #[arg(long, global = true)]
    user: Option<String>,

    /// Print JSON instead of text (list, show, stuck, stats).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

// These doc comments are the `--help` text, where backticks would show.
#[allow(clippy::doc_markdown)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update the saga tables.
    Migrate,
    /// List sagas, newest first.
    List {
        /// Only sagas in this state (running, compensating, completed, failed,
        /// compensation_failed, parked).
        #[arg(long)]
        state: Option<SagaState>,
        /// Only sagas of this type.
        #[arg(long = "type")]
        saga_type: Option<String>,
        /// Only sagas created within this long (`90s`, `1h`, `30d`).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One saga: state, step, context, error, and its audit timeline.
    Show {
        /// The saga's id.
        id: String,
    },
    /// Running or compensating sagas that have not moved for a while, and waiting sagas
    /// that are overdue: due a while ago, yet no runner has woken them.
    Stuck {
        /// How long without a write counts as stuck.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// How long past its `wake_at` a waiting saga counts as overdue.
        #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
        overdue_after: Duration,
    },
    /// Ask a running saga to stop; its runner compensates it at the next step boundary.
    Cancel {
        /// The saga's id.
        id: String,
        /// Why (written to the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Deliver a signal to a saga: the step waiting for it runs once a runner takes it (a
    /// payload that does not decode into the signal's type is rejected there).
    Signal {
        /// The saga's id.
        id: String,
        /// The signal's name (a `#[signal]` parameter of one of the saga's steps).
        name: String,
        /// The payload, as JSON: `saga signal ID NAME --json '{"by":"ada"}'` (or without
        /// `--json`).
        #[arg(value_name = "JSON")]
        payload: String,
        /// Send at most once under this key (a second send with it is ignored).
        #[arg(long)]
        key: Option<String>,
    },
    /// Make a parked, stuck or compensation_failed saga runnable again by the runners (a
    /// waiting one wakes now).
    Resume {
        /// The saga's id.
        id: String,
        /// Why (written to the audit log).
        #[arg(long, default_value = "resumed by an operator")]
        reason: String,
    },
    /// Undo a completed saga: the next runner to take it compensates its steps, newest
    /// first (refused past its pivot), and it ends failed with `undone: <reason>`.
    Undo {
        /// The saga's id.
        id: String,
        /// Why (written as the saga's error and to the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Close an unfinished saga as failed (after compensating by hand).
    Fail {
        /// The saga's id.
        id: String,
        /// Why (written as the saga's error and to the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Delete audit rows, and finished sagas, older than a retention period.
    Prune {
        /// The retention period (`30d`).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Serve the operator console in the browser: lists, one saga's timeline, stats,
    /// and (with a token) actions. Read-only unless a token is given.
    Serve {
        /// Where to listen (loopback unless told otherwise).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The token an operator signs in with to act on sagas (none: read-only).
        #[arg(long, env = "SAGA_CONSOLE_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Counts by type and state, and failure and compensation rates over a window.
    Stats {
        /// The window of the rates.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        window: Duration,
    },
}

/// A failure to report: one line, then exit 1.
#[derive(Debug)]
struct Failure(String);

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure(error.to_string())
    }
}

type Result<T> = std::result::Result<T, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn login_name() -> String {
    ["SAGA_USER", "USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Opens the database; applies migrations only for `saga migrate`, and otherwise refuses a
/// database whose schema is not current.
async fn open(url: &str, migrate: bool) -> Result<(Arc<dyn SagaStore>, Vec<(i64, &'static str)>)> {
    let shown = redact(url);
    let cannot = |error: StoreError| match error {
        StoreError::Invalid { .. } | StoreError::NotMigrated(_) => Failure(error.to_string()),
        other => Failure(format!("cannot open {shown}: {other}")),
    };
    if url.starts_with("sqlite:") {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:")
            .split('?')
            .next()
            .unwrap_or_default();
        let in_memory = path.contains(":memory:");
        if !migrate && !in_memory && !std::path::Path::new(path).exists() {
            return Err(Failure(format!(
                "database file `{path}` does not exist; run `saga migrate` to create it"
            )));
        }
        let store = SqliteStore::builder(url)
            .migrate(false)
            .connect()
            .await
            .map_err(cannot)?;
        if migrate {
            let pending = store.pending_migrations().await.map_err(cannot)?;
            store.migrate().await.map_err(cannot)?;
            return Ok((Arc::new(store), pending));
        }
        let pending = store.pending_migrations().await.map_err(cannot)?;
        not_migrated(&pending)?;
        return Ok((Arc::new(store), pending));
    }
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let store = PostgresStore::builder(url)
            .pool_size(1)
            .max_overflow(1)
            .acquire_timeout(Duration::from_secs(5))
            .migrate(false)
            .connect()
            .await
            .map_err(cannot)?;
        let pending = store.pending_migrations().await.map_err(cannot)?;
        if migrate {
            store.migrate().await.map_err(cannot)?;
        } else {
            not_migrated(&pending)?;
        }
        return Ok((Arc::new(store), pending));
    }
    Err(Failure(format!(
        "invalid database URL `{shown}`: expected sqlite://FILE or postgres://USER@HOST/DB"
    )))
}

fn not_migrated(pending: &[(i64, &str)]) -> Result<()> {
    match pending.first() {
        None => Ok(()),
        Some((version, description)) => Err(Failure(format!(
            "database is not migrated ({} of its migrations are missing, the first {version} `{description}`); run `saga migrate`",
            pending.len()
        ))),
    }
}

fn not_found(id: &str) -> Failure {
    Failure(format!("saga `{id}` not found"))
}

async fn run(cli: Cli) -> Result<()> {
    let url = cli.database_url.clone().ok_or_else(|| {
        Failure("no database: pass --database-url or set DATABASE_URL".to_owned())
    })?;
    let actor = Actor::new(cli.user.clone().unwrap_or_else(login_name));
    let migrate = matches!(cli.command, Command::Migrate);
    let (shared, pending) = open(&url, migrate).await?;
    let store = &*shared;
    match cli.command {
        Command::Migrate => {
            if pending.is_empty() {
                out!("{}: up to date", redact(&url));
            } else {
                for (version, description) in &pending {
                    out!("applied {version} {description}");
                }
                out!("{}: migrated", redact(&url));
            }
        }
        Command::List {
            state,
            saga_type,
            since,
            limit,
        } => {
            let mut query = SagaQuery::new().limit(limit);
            query.state = state;
            query.saga_type = saga_type;
            query.created_since = since.map(ago);
            let sagas = store.list(&query).await?;
            output::list(&sagas, cli.json);
        }
        Command::Show { id } => {
            let saga = store.load(&id).await?.ok_or_else(|| not_found(&id))?;
            let events = store.audit_log(&AuditQuery::new().saga_id(&id)).await?;
            output::show(&saga, &events, cli.json);
        }
        Command::Stuck {
            older_than,
            overdue_after,
        } => stuck(store, older_than, overdue_after, cli.json).await?,
        Command::Cancel { id, reason } => {
            let saga = match store.request_cancel(&id, &reason, &actor).await {
                Err(StoreError::NotFound { .. }) => return Err(not_found(&id)),
                other => other?,
            };
            out!(
                "cancellation of saga {} requested by {}; its runner compensates it at the next step boundary (it is at step `{}`)",
                saga.saga_id,
                actor.user_id,
                saga.current_step.as_deref().unwrap_or("?")
            );
        }
        Command::Signal {
            id,
            name,
            payload,
            key,
        } => signal(store, &actor, id, name, payload, key).await?,
        Command::Resume { id, reason } => {
            let saga = match store.resume(&id, &reason, &actor).await {
                Err(StoreError::NotFound { .. }) => return Err(not_found(&id)),
                other => other?,
            };
            out!(
                "saga {} is runnable again ({} at step `{}`, attempt {}); a runner with `{}` registered will pick it up",
                saga.saga_id,
                saga.state,
                saga.current_step.as_deref().unwrap_or("?"),
                saga.attempt,
                saga.definition
            );
        }
        Command::Undo { id, reason } => {
            let saga = match store.request_undo(&id, &reason, &actor).await {
                Err(StoreError::NotFound { .. }) => return Err(not_found(&id)),
                other => other?,
            };
            out!(
                "undo of saga {} requested by {}; the next runner to take it compensates its steps, newest first (unless it passed its pivot)",
                saga.saga_id,
                actor.user_id
            );
        }
        Command::Fail { id, reason } => {
            let saga = match store.mark_failed(&id, &reason, &actor).await {
                Err(StoreError::NotFound { .. }) => return Err(not_found(&id)),
                other => other?,
            };
            out!(
                "saga {} marked failed by {}: {reason}",
                saga.saga_id,
                actor.user_id
            );
        }
        Command::Prune {
            older_than,
            dry_run,
        } => prune(store, &actor, older_than, dry_run).await?,
        Command::Serve { listen, token } => serve(shared.clone(), listen, token).await?,
        Command::Stats { window } => {
            let counts = store
                .stats(ago(Duration::from_hours(1)), ago(Duration::from_mins(1)))
                .await?;
            let events = store.event_counts(ago(window)).await?;
            output::stats(&counts, &events, window, cli.json);
        }
    }
    Ok(())
}

/// `saga prune`: audit rows and finished sagas older than `older_than`.
async fn prune(
    store: &dyn SagaStore,
    actor: &Actor,
    older_than: Duration,
    dry_run: bool,
) -> Result<()> {
    let before = ago(older_than);
    let report = store.prune(before, dry_run, actor).await?;
    out!(
        "{} {} audit rows and {} finished sagas older than {} (before {})",
        if dry_run { "would delete" } else { "deleted" },
        report.audit_rows,
        report.sagas,
        output::short(older_than),
        output::time(before)
    );
    Ok(())
}

/// `saga serve`: the console on `listen` until Ctrl-C.
async fn serve(
    shared: std::sync::Arc<dyn SagaStore>,
    listen: std::net::SocketAddr,
    token: Option<String>,
) -> Result<()> {
    let read_only = token.as_deref().is_none_or(str::is_empty);
    let app = saga_console::Console::new(shared.clone())
        .token(token)
        .router();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Failure(format!("cannot listen on {listen}: {e}")))?;
    let bound = listener.local_addr().unwrap_or(listen);
    out!(
        "console on http://{bound}/ ({})",
        if read_only {
            "read-only: no token"
        } else {
            "actions need the token"
        }
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Failure(format!("console: {e}")))?;
    Ok(())
}

/// `saga stuck`: active sagas not written for `older_than`, and waits overdue by
/// `overdue_after`.
async fn stuck(
    store: &dyn SagaStore,
    older_than: Duration,
    overdue_after: Duration,
    json: bool,
) -> Result<()> {
    let before = ago(older_than);
    let mut stuck = Vec::new();
    for state in [SagaState::Running, SagaState::Compensating] {
        stuck.extend(
            store
                .list(&SagaQuery::new().state(state).updated_before(before))
                .await?,
        );
    }
    stuck.sort_by_key(|s| s.updated_at);
    let mut overdue = store
        .list(&SagaQuery::new().due_before(ago(overdue_after)))
        .await?;
    overdue.sort_by_key(|s| s.wake_at);
    output::stuck(&stuck, older_than, &overdue, overdue_after, json);
    Ok(())
}

/// `saga signal`: sends signal `name` with `payload` (JSON) to saga `id`.
async fn signal(
    store: &dyn SagaStore,
    actor: &Actor,
    id: String,
    name: String,
    payload: String,
    key: Option<String>,
) -> Result<()> {
    let mut signal = NewSignal::new(&id, &name, payload, actor.clone());
    signal.key = key;
    match store.send_signal(signal).await {
        Err(StoreError::NotFound { .. }) => return Err(not_found(&id)),
        Ok(Sent::Duplicate { id: earlier }) => out!(
            "signal `{name}` for saga {id} was already sent with this key (signal {earlier}); nothing sent"
        ),
        Ok(Sent::Delivered { id: signal_id }) => out!(
            "signal `{name}` delivered to saga {id} (signal {signal_id}) by {}; the step waiting for it runs once a runner takes it",
            actor.user_id
        ),
        Ok(_) => out!("signal `{name}` sent to saga {id}"),
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

/// `d` before now.
fn ago(d: Duration) -> SystemTime {
    SystemTime::now()
        .checked_sub(d)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}
