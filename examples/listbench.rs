//! Times a page of the saga list (`SagaStore::list`, what the console's list page and
//! `saga list` send) and one saga's audit rows (`SagaStore::audit_log`, what the console's
//! saga page and `saga audit` send) on a memory store holding many sagas, printing figures:
//!
//! ```text
//! cargo run --release --example listbench -- --sagas 1000000
//! ```
//!
//! The store is filled through `RunnerStore::create`, as the executor fills it; then the
//! first page (`--limit` sagas, newest first), a page half way down (keyset cursor) and a
//! filtered page are each read `--rounds` times, then the audit rows of one saga (each saga
//! has written one). The database stores' plans for the same
//! queries are in `bench/console_plan.sh`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use saga_runtime::audit::{AuditHeader, NewEvent};
use saga_runtime::store::{NewSaga, RunnerStore, SagaQuery, SagaStore};
use saga_runtime::{AuditQuery, EventType, MemoryStore, SagaState};

#[derive(Parser)]
struct Args {
    /// Sagas in the store.
    #[arg(long, default_value_t = 1_000_000)]
    sagas: u32,
    /// Sagas per page.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Reads of each page.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let store = MemoryStore::new();
    let header = Arc::new(AuditHeader {
        saga_type: "order".into(),
        user_id: None,
        ip_address: None,
    });
    let began = Instant::now();
    for i in 0..args.sagas {
        let mut saga = NewSaga::new(format!("saga-{i:07}"), "order", "f", header.clone());
        saga.first_step = "reserve";
        saga.context = r#"{"input":{"id":1},"reserve":null}"#.into();
        saga.config = r#"{"saga_type":"order"}"#.into();
        saga.events = vec![NewEvent::now(EventType::SagaStarted)];
        store.create(saga).await.map_err(|e| e.to_string())?;
    }
    println!(
        "filled {} sagas in {:.1} s",
        args.sagas,
        began.elapsed().as_secs_f64()
    );
    let first = SagaQuery::default().limit(args.limit);
    let half_way = store
        .load(&format!("saga-{:07}", args.sagas / 2))
        .await
        .map_err(|e| e.to_string())?
        .map(|row| (row.created_at, row.saga_id));
    let mut deep = SagaQuery::default().limit(args.limit);
    deep.after = half_way;
    let mut running = SagaQuery::default().limit(args.limit);
    running.state = Some(SagaState::Running);
    running.created_since = Some(SystemTime::UNIX_EPOCH);
    for (name, query) in [
        ("first page", &first),
        ("a page half way down", &deep),
        ("state = running", &running),
    ] {
        let mut times = Vec::new();
        for _ in 0..args.rounds {
            let began = Instant::now();
            let page = store.list(query).await.map_err(|e| e.to_string())?;
            times.push(began.elapsed());
            if page.len() != args.limit.min(args.sagas) as usize {
                return Err(format!("{name}: {} sagas, not {}", page.len(), args.limit));
            }
        }
        report(name, &mut times, args.rounds);
    }
    let one = AuditQuery::new().saga_id(format!("saga-{:07}", args.sagas / 2));
    let mut times = Vec::new();
    for _ in 0..args.rounds {
        let began = Instant::now();
        let rows = store.audit_log(&one).await.map_err(|e| e.to_string())?;
        times.push(began.elapsed());
        if rows.len() != 1 {
            return Err(format!("one saga's audit: {} rows, not 1", rows.len()));
        }
    }
    report("one saga's audit rows", &mut times, args.rounds);
    Ok(())
}

fn report(name: &str, times: &mut [Duration], rounds: u32) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: median {:.1} ms, min {:.1} ms, max {:.1} ms over {rounds} reads",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1]),
    );
}
