//! PostgreSQL's side of group commit: a whole batch of creates, checkpoints and their audit
//! rows as ONE statement (data-modifying CTEs over arrays), so a batch costs one round
//! trip and one commit. The statement text never changes, so the server keeps one plan,
//! and `saga_id = ANY(..)` keeps the primary key index in use however large the batch.
//! Writers keep connections of their own, without the pre-ping of the main pool: a broken
//! connection fails its batch, which the committer then retries write by write.

use std::collections::HashMap;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool, Row};

use super::rows::{COLUMNS, micros, record};
use crate::audit::{AuditHeader, NewEvent};
use crate::definition::{BoxFuture, SagaState};
use crate::error::StoreError;
use crate::store::batch::{BatchBackend, Op, Reply, replies};
use crate::store::sql::{self, database_error};
use crate::store::time::to_micros;
use crate::store::{Checkpoint, Created, NewSaga, SagaRecord, Saved};

const BATCH: &str = "\
WITH c AS (
  INSERT INTO saga_checkpoints (saga_id, saga_type, definition, fingerprint, state, step_index,
    current_step, attempt, step_status, context, config, version, owner, lease_expires_at,
    recovery_count, user_id, ip_address, created_at, updated_at, signals)
  SELECT v.saga_id, v.saga_type, v.definition, v.fingerprint, 'running', 0, v.first_step,
    v.attempt, v.step_status, v.context, v.config, 1, v.owner,
    now() + v.lease_us * interval '1 microsecond', 0, v.user_id, v.ip_address, now(), now(),
    v.signals
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[],
    $7::text[], $8::text[], $9::text[], $10::int8[], $11::text[], $12::text[], $38::text[],
    $41::text[])
    AS v(saga_id, saga_type, definition, fingerprint, first_step, attempt, context, config,
      owner, lease_us, user_id, ip_address, step_status, signals)
  ON CONFLICT (saga_id) DO NOTHING
  RETURNING saga_id
), u AS (
  UPDATE saga_checkpoints AS s SET state = v.state, step_index = v.step_index,
    current_step = v.current_step, attempt = v.attempt, step_status = v.step_status,
    context = COALESCE(v.context, s.context),
    error = v.error, failed_step = v.failed_step, version = s.version + 1,
    owner = CASE WHEN v.state = 'waiting' THEN NULL ELSE v.owner END,
    lease_expires_at = CASE WHEN v.state = 'waiting' THEN NULL
      ELSE now() + v.lease_us * interval '1 microsecond' END,
    wake_at = CASE WHEN v.state <> 'waiting' THEN NULL
      WHEN v.waiting_for IS NOT NULL AND EXISTS (SELECT 1 FROM saga_signals AS g
        WHERE g.saga_id = v.saga_id AND g.name = ANY(string_to_array(v.waiting_for, ' '))
        AND g.consumed_at IS NULL AND g.rejected_at IS NULL) THEN now()
      ELSE now() + v.wake_us * interval '1 microsecond' END,
    waiting_for = CASE WHEN v.state = 'waiting' THEN v.waiting_for END,
    recovery_count = CASE WHEN v.progress THEN 0 ELSE s.recovery_count END,
    parked_from = v.parked_from,
    cancel_requested = CASE WHEN v.clear_cancel THEN NULL ELSE s.cancel_requested END,
    updated_at = now()
  FROM unnest($13::text[], $14::int8[], $15::text[], $16::int4[], $17::text[], $18::int4[],
    $19::text[], $20::text[], $21::text[], $22::text[], $23::int8[], $24::bool[], $25::text[],
    $26::bool[], $27::bool[], $39::text[], $40::int8[], $42::text[])
    AS v(saga_id, expected_version, state, step_index, current_step, attempt, context, error,
      failed_step, owner, lease_us, progress, parked_from, clear_cancel, unless_cancelled,
      step_status, wake_us, waiting_for)
  WHERE s.saga_id = ANY($13) AND s.saga_id = v.saga_id AND s.version = v.expected_version
    AND (NOT v.unless_cancelled OR s.cancel_requested IS NULL)
  RETURNING s.saga_id, s.version
), g AS (
  UPDATE saga_signals SET consumed_at = now()
  FROM unnest($44::text[], $43::int8[]) AS x(saga_id, id)
  WHERE saga_signals.id = x.id AND x.saga_id IN (SELECT saga_id FROM u)
), a AS (
  INSERT INTO saga_audit_logs (saga_id, saga_type, event_type, step_name, attempt,
    error_message, details, user_id, ip_address, timestamp)
  SELECT e.saga_id, e.saga_type, e.event_type, e.step_name, e.attempt, e.error_message,
    e.details, e.user_id, e.ip_address, 'epoch'::timestamptz + e.ts_us * interval '1 microsecond'
  FROM unnest($28::text[], $29::text[], $30::text[], $31::text[], $32::int4[], $33::text[],
    $34::text[], $35::text[], $36::text[], $37::int8[])
    AS e(saga_id, saga_type, event_type, step_name, attempt, error_message, details, user_id,
      ip_address, ts_us)
  WHERE e.saga_id IN (SELECT saga_id FROM c UNION ALL SELECT saga_id FROM u)
)
SELECT saga_id, 0::int8 AS version, true AS created FROM c
UNION ALL
SELECT saga_id, version, false AS created FROM u";

pub(crate) struct PostgresBatch {
    /// How writers connect: the main pool's options, with sequential scans off.
    options: PgConnectOptions,
    /// Connections between batches, with when each was last used; at most `writers`.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    writers: usize,
    /// How long a writer waits for a new connection: the main pool's acquire timeout.
    connect_timeout: Duration,
}

/// A writer's connection idle for longer is closed rather than reused (a firewall or the
/// server may have dropped it).
const IDLE: Duration = Duration::from_mins(1);

impl PostgresBatch {
    /// Writers connect with the main pool's options. Their connections plan with sequential
    /// scans off: a plan cached while `saga_checkpoints` is small would otherwise scan the
    /// whole table for every batch once it has grown (throughput then falls with history),
    /// and every statement a writer runs finds its rows by primary key.
    pub(crate) fn new(main: &PgPool, writers: usize) -> Self {
        let options = (*main.connect_options())
            .clone()
            .options([("enable_seqscan", "off")]);
        PostgresBatch {
            options,
            idle: Mutex::new(Vec::new()),
            writers: writers.max(1),
            connect_timeout: main.options().get_acquire_timeout(),
        }
    }

    /// An idle connection, or a new one. Kept by the writers themselves rather than
    /// acquired from a pool: a pool's hand-back is a task hop on every batch.
    async fn connection(&self) -> Result<PgConnection, StoreError> {
        loop {
            let popped = self.idle().pop();
            match popped {
                Some((conn, used)) if used.elapsed() < IDLE => return Ok(conn),
                Some((conn, _)) => drop(conn),
                None => break,
            }
        }
        let connect = PgConnection::connect_with(&self.options);
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(connected) => connected.map_err(database_error),
            // An I/O error, so transient: the write is retried like any lost connection.
            Err(_) => Err(StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no connection to PostgreSQL within {:?}",
                    self.connect_timeout
                ),
            )))),
        }
    }

    fn put_back(&self, conn: PgConnection) {
        let mut idle = self.idle();
        if idle.len() < self.writers {
            idle.push((conn, Instant::now()));
        }
    }

    /// The idle list; a panic while it was held cannot have left it inconsistent.
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(PgConnection, Instant)>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl BatchBackend for PostgresBatch {
    fn write<'a>(
        &'a self,
        ops: &'a [Op],
    ) -> BoxFuture<'a, Result<Vec<Result<Reply, StoreError>>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let result = write(&mut conn, ops).await;
            // After an error the connection may be broken: drop it, and let the next
            // batch open another.
            if result.is_ok() {
                self.put_back(conn);
            }
            result
        })
    }
}

/// Text columns of the ops of one kind.
fn texts<T>(items: &[&T], f: impl Fn(&T) -> Option<String>) -> Vec<Option<String>> {
    items.iter().map(|item| f(item)).collect()
}

/// Creates one saga through `conn` (the caller's transaction, for
/// `PostgresStore::create_in`) with the same statement as every batch.
pub(super) async fn create_on(
    conn: &mut sqlx::PgConnection,
    saga: NewSaga,
) -> Result<Created, StoreError> {
    let mut results = write(conn, &[Op::Create(saga)]).await?;
    match results.pop() {
        Some(Ok(Reply::Created(created))) => Ok(created),
        Some(Err(error)) => Err(error),
        _ => Err(StoreError::Invalid {
            what: "batch result",
            reason: "a create got no result".into(),
        }),
    }
}

async fn write(
    conn: &mut sqlx::PgConnection,
    ops: &[Op],
) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
    // Two creates of one id in a batch would both log their events: keep the later ones
    // for a batch of their own.
    let mut seen = std::collections::HashSet::new();
    let mut now_ops: Vec<usize> = Vec::new();
    let mut later_ops: Vec<usize> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let id = match op {
            Op::Create(saga) => &*saga.saga_id,
            Op::Save(cp) => &*cp.saga_id,
        };
        if seen.insert(id) {
            now_ops.push(i);
        } else {
            later_ops.push(i);
        }
    }
    let mut results: Vec<Option<Result<Reply, StoreError>>> = ops.iter().map(|_| None).collect();
    let tells = ops
        .iter()
        .any(|op| matches!(op, Op::Save(cp) if cp.tell.is_some()));
    let signal_waits: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Save(cp) if cp.state == SagaState::Waiting && cp.waiting_for.is_some() => {
                Some(&*cp.saga_id)
            }
            _ => None,
        })
        .collect();
    if !tells && signal_waits.is_empty() {
        // The common case: one statement, its own transaction.
        run(conn, ops, &now_ops, &mut results).await?;
        for i in later_ops {
            run(conn, ops, &[i], &mut results).await?;
        }
        return Ok(replies(results));
    }
    // A transaction of several statements: a child's end told to its parent commits with
    // the child's write, or neither does; and a wait for a signal sees the signal.
    let mut tx = conn.begin().await.map_err(database_error)?;
    if !signal_waits.is_empty() {
        // A signal's sender holds its saga's row from reading the saga's state until it
        // commits, and wakes the saga only if it saw it waiting. The rows of the sagas put
        // to wait for a signal are taken first, in a statement of their own, so that the
        // batch statement's snapshot (taken after) sees every signal whose sender saw its
        // saga still running: such a wait is then due at once. In one statement, the
        // update would wait for the sender's row but look for signals in an older snapshot.
        sqlx::query(
            "SELECT 1 FROM saga_checkpoints WHERE saga_id = ANY($1) ORDER BY saga_id FOR UPDATE",
        )
        .bind(&signal_waits)
        .execute(&mut *tx)
        .await
        .map_err(database_error)?;
    }
    run(&mut tx, ops, &now_ops, &mut results).await?;
    for i in later_ops {
        run(&mut tx, ops, &[i], &mut results).await?;
    }
    for (op, result) in ops.iter().zip(&results) {
        if let Op::Save(cp) = op
            && let Some(tell) = &cp.tell
            && matches!(result, Some(Ok(Reply::Saved(Saved::Written { .. }))))
        {
            match super::signals::deliver_on(&mut tx, tell).await {
                Ok(_) => {}
                Err(refused) if crate::store::operator::is_refusal(&refused) => {}
                Err(error) => return Err(error),
            }
        }
    }
    tx.commit().await.map_err(database_error)?;
    Ok(replies(results))
}

/// One statement for the ops at `indices` (distinct saga ids), then a look-up of the ops
/// it did not apply.
// One statement (`BATCH`) and its 43 bound arrays, each a line, in the order of its
// placeholders; splitting it would split that correspondence.
#[allow(clippy::too_many_lines)]
async fn run(
    conn: &mut sqlx::PgConnection,
    ops: &[Op],
    indices: &[usize],
    results: &mut [Option<Result<Reply, StoreError>>],
) -> Result<(), StoreError> {
    let mut creates: Vec<(usize, &NewSaga)> = Vec::new();
    let mut saves: Vec<(usize, &Checkpoint)> = Vec::new();
    let mut events: Vec<(&str, &AuditHeader, &NewEvent)> = Vec::new();
    for &i in indices {
        match &ops[i] {
            Op::Create(saga) => {
                creates.push((i, saga));
                events.extend(
                    saga.events
                        .iter()
                        .map(|e| (&*saga.saga_id, &*saga.header, e)),
                );
            }
            Op::Save(cp) => {
                saves.push((i, cp));
                events.extend(cp.events.iter().map(|e| (&*cp.saga_id, &*cp.header, e)));
            }
        }
    }
    let c: Vec<&NewSaga> = creates.iter().map(|(_, s)| *s).collect();
    let s: Vec<&Checkpoint> = saves.iter().map(|(_, cp)| *cp).collect();
    let e: Vec<&(&str, &AuditHeader, &NewEvent)> = events.iter().collect();
    let int32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let rows = sqlx::query(BATCH)
        .bind(texts(&c, |s| Some(s.saga_id.to_string())))
        .bind(texts(&c, |s| Some(s.header.saga_type.clone())))
        .bind(texts(&c, |s| Some(s.definition.to_owned())))
        .bind(texts(&c, |s| Some(s.fingerprint.to_owned())))
        .bind(texts(&c, |s| Some(s.first_step.to_owned())))
        .bind(
            c.iter()
                .map(|s| i32::from(s.owner.is_some()))
                .collect::<Vec<i32>>(),
        )
        .bind(texts(&c, |s| Some(s.context.clone())))
        .bind(texts(&c, |s| Some(s.config.clone())))
        .bind(texts(&c, |s| s.owner.as_deref().map(str::to_owned)))
        .bind(
            c.iter()
                .map(|s| {
                    if s.owner.is_some() {
                        micros(s.lease)
                    } else {
                        0
                    }
                })
                .collect::<Vec<i64>>(),
        )
        .bind(texts(&c, |s| s.header.user_id.clone()))
        .bind(texts(&c, |s| s.header.ip_address.clone()))
        .bind(
            s.iter()
                .map(|cp| cp.saga_id.to_string())
                .collect::<Vec<String>>(),
        )
        .bind(s.iter().map(|cp| cp.expected_version).collect::<Vec<i64>>())
        .bind(texts(&s, |cp| Some(cp.state.as_str().to_owned())))
        .bind(
            s.iter()
                .map(|cp| int32(cp.step_index))
                .collect::<Vec<i32>>(),
        )
        .bind(texts(&s, |cp| cp.current_step.map(str::to_owned)))
        .bind(s.iter().map(|cp| int32(cp.attempt)).collect::<Vec<i32>>())
        .bind(texts(&s, |cp| cp.context.clone()))
        .bind(texts(&s, |cp| cp.error.clone()))
        .bind(texts(&s, |cp| cp.failed_step.clone()))
        .bind(texts(&s, |cp| Some(cp.owner.to_string())))
        .bind(s.iter().map(|cp| micros(cp.lease)).collect::<Vec<i64>>())
        .bind(s.iter().map(|cp| cp.progress).collect::<Vec<bool>>())
        .bind(texts(&s, |cp| {
            cp.parked_from.map(|p| p.as_str().to_owned())
        }))
        .bind(s.iter().map(|cp| cp.clear_cancel).collect::<Vec<bool>>())
        .bind(
            s.iter()
                .map(|cp| cp.unless_cancelled)
                .collect::<Vec<bool>>(),
        )
        .bind(texts(&e, |(id, _, _)| Some((*id).to_owned())))
        .bind(texts(&e, |(_, h, _)| Some(h.saga_type.clone())))
        .bind(texts(&e, |(_, _, ev)| {
            Some(ev.event_type.as_str().to_owned())
        }))
        .bind(texts(&e, |(_, _, ev)| {
            ev.step_name.as_deref().map(str::to_owned)
        }))
        .bind(
            e.iter()
                .map(|(_, _, ev)| ev.attempt.map(int32))
                .collect::<Vec<Option<i32>>>(),
        )
        .bind(texts(&e, |(_, _, ev)| ev.error_message.clone()))
        .bind(texts(&e, |(_, _, ev)| ev.details.clone()))
        .bind(texts(&e, |(_, h, _)| h.user_id.clone()))
        .bind(texts(&e, |(_, h, _)| h.ip_address.clone()))
        .bind(
            e.iter()
                .map(|(_, _, ev)| to_micros(ev.timestamp))
                .collect::<Vec<i64>>(),
        )
        .bind(texts(&c, |s| Some(crate::status::encode(&s.steps))))
        .bind(texts(&s, |cp| Some(crate::status::encode(&cp.steps))))
        .bind(
            s.iter()
                .map(|cp| cp.wake_after.map(micros))
                .collect::<Vec<Option<i64>>>(),
        )
        .bind(texts(&c, |s| crate::store::sql::signal_names(s.signals)))
        .bind(texts(&s, |cp| cp.waiting_for.as_deref().map(str::to_owned)))
        .bind(
            s.iter()
                .flat_map(|cp| cp.consume_signals.iter().copied())
                .collect::<Vec<i64>>(),
        )
        .bind(
            s.iter()
                .flat_map(|cp| cp.consume_signals.iter().map(|_| &*cp.saga_id))
                .collect::<Vec<&str>>(),
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(database_error)?;
    let mut inserted: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut written: HashMap<String, i64> = HashMap::new();
    for row in rows {
        let id: String = row.try_get("saga_id")?;
        if row.try_get::<bool, _>("created")? {
            inserted.insert(id);
        } else {
            written.insert(id, row.try_get("version")?);
        }
    }

    let mut missed: Vec<String> = Vec::new();
    for (i, saga) in &creates {
        if inserted.contains(&*saga.saga_id) {
            results[*i] = Some(Ok(Reply::Created(Created::New { version: 1 })));
        } else {
            missed.push(saga.saga_id.to_string());
        }
    }
    for (i, cp) in &saves {
        match written.get(&*cp.saga_id) {
            Some(&version) => results[*i] = Some(Ok(Reply::Saved(Saved::Written { version }))),
            None => missed.push(cp.saga_id.to_string()),
        }
    }
    if missed.is_empty() {
        return Ok(());
    }
    // Rare: ids taken, writes fenced off or refused for a cancellation.
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM saga_checkpoints WHERE saga_id = ANY($1)"
    )))
    .bind(&missed)
    .fetch_all(&mut *conn)
    .await
    .map_err(database_error)?;
    let mut found: HashMap<String, SagaRecord> = HashMap::new();
    for row in &rows {
        let record = record(row)?;
        found.insert(record.saga_id.clone(), record);
    }
    for (i, saga) in &creates {
        if results[*i].is_none() {
            results[*i] = Some(match found.get(&*saga.saga_id) {
                Some(record) => Ok(Reply::Created(Created::Existing(Box::new(record.clone())))),
                None => Err(StoreError::NotFound {
                    saga_id: saga.saga_id.to_string(),
                }),
            });
        }
    }
    for (i, cp) in &saves {
        if results[*i].is_none() {
            let row = found
                .get(&*cp.saga_id)
                .map(|r| (r.version, r.cancel_requested.clone()));
            results[*i] = Some(sql::classify_miss(cp, row.as_ref()));
        }
    }
    Ok(())
}
