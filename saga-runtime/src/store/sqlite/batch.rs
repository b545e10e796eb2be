//! SQLite's side of group commit: a batch of creates and checkpoints as one transaction of
//! at most four statements (insert sagas, update sagas, look up misses, insert audit rows).

use std::collections::HashMap;
use std::time::SystemTime;

use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::rows::{COLUMNS, insert_events_many, record};
use crate::definition::{BoxFuture, SagaState};
use crate::error::StoreError;
use crate::store::batch::{BatchBackend, Op, Reply, replies};
use crate::store::sql::database_error;
use crate::store::time::{later, to_text};
use crate::store::{Created, Saved};

/// Rows per multi-row statement: 19 parameters each stays far below SQLite's limit.
const CHUNK: usize = 500;

pub(crate) struct SqliteBatch {
    pub(crate) pool: SqlitePool,
}

impl BatchBackend for SqliteBatch {
    fn write<'a>(
        &'a self,
        ops: &'a [Op],
    ) -> BoxFuture<'a, Result<Vec<Result<Reply, StoreError>>, StoreError>> {
        Box::pin(write(&self.pool, ops))
    }
}

/// A creation of the batch, with its index among the batch's ops.
type Creates<'a> = Vec<(usize, &'a crate::store::NewSaga)>;
/// A checkpoint of the batch, with its index among the batch's ops.
type Saves<'a> = Vec<(usize, &'a crate::store::Checkpoint)>;
/// The reply to each op of the batch, once known.
type Results = Vec<Option<Result<Reply, StoreError>>>;
type Tx<'t> = sqlx::Transaction<'t, Sqlite>;

/// One transaction: creates, then checkpoints, the signals they consume and tell, and the
/// audit rows of every write that took effect.
async fn write(
    pool: &SqlitePool,
    ops: &[Op],
) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
    // One clock reading for the whole transaction, formatted once.
    let now = SystemTime::now();
    let now_text = to_text(now);
    let mut tx = pool.begin().await.map_err(database_error)?;
    let mut results: Results = ops.iter().map(|_| None).collect();
    let creates: Creates<'_> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op {
            Op::Create(saga) => Some((i, saga)),
            Op::Save(_) => None,
        })
        .collect();
    create(&mut tx, &creates, now, &now_text, &mut results).await?;
    let saves: Saves<'_> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op {
            Op::Save(cp) => Some((i, cp)),
            Op::Create(_) => None,
        })
        .collect();
    let written = save(&mut tx, &saves, now, &now_text, &mut results).await?;
    consume_and_tell(&mut tx, &saves, &written, &now_text).await?;
    audit(&mut tx, ops, &results).await?;
    tx.commit().await.map_err(database_error)?;
    Ok(replies(results))
}

/// Creates: insert, then look up the ids that already existed.
async fn create(
    tx: &mut Tx<'_>,
    creates: &Creates<'_>,
    now: SystemTime,
    now_text: &str,
    results: &mut Results,
) -> Result<(), StoreError> {
    let mut inserted: Vec<String> = Vec::new();
    for chunk in creates.chunks(CHUNK) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO saga_checkpoints (saga_id, saga_type, definition, fingerprint, state, \
             step_index, current_step, attempt, step_status, context, config, version, owner, \
             lease_expires_at, recovery_count, user_id, ip_address, created_at, updated_at, \
             signals) ",
        );
        query.push_values(chunk, |mut row, (_, saga)| {
            let lease_until = if saga.owner.is_some() {
                later(now, saga.lease)
            } else {
                now
            };
            row.push_bind(&*saga.saga_id)
                .push_bind(&saga.header.saga_type)
                .push_bind(saga.definition)
                .push_bind(saga.fingerprint)
                .push_bind("running")
                .push_bind(0_i64)
                .push_bind(saga.first_step)
                .push_bind(i64::from(saga.owner.is_some()))
                .push_bind(crate::status::encode(&saga.steps))
                .push_bind(&saga.context)
                .push_bind(&saga.config)
                .push_bind(1_i64)
                .push_bind(saga.owner.as_deref())
                .push_bind(to_text(lease_until))
                .push_bind(0_i64)
                .push_bind(&saga.header.user_id)
                .push_bind(&saga.header.ip_address)
                .push_bind(now_text)
                .push_bind(now_text)
                .push_bind(crate::store::sql::signal_names(saga.signals));
        });
        query.push(" ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id");
        let ids: Vec<String> = query
            .build_query_scalar()
            .fetch_all(&mut **tx)
            .await
            .map_err(database_error)?;
        inserted.extend(ids);
    }
    let mut missed_creates = Vec::new();
    for &(i, saga) in creates {
        if let Some(at) = inserted.iter().position(|id| id.as_str() == &*saga.saga_id) {
            // A second create of the same id in this batch finds the first one's row.
            inserted.swap_remove(at);
            results[i] = Some(Ok(Reply::Created(Created::New { version: 1 })));
        } else {
            missed_creates.push((i, saga.saga_id.to_string()));
        }
    }
    if !missed_creates.is_empty() {
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {COLUMNS} FROM saga_checkpoints WHERE saga_id IN ("
        ));
        let mut list = query.separated(", ");
        for (_, id) in &missed_creates {
            list.push_bind(id.as_str());
        }
        query.push(")");
        let rows = query
            .build()
            .fetch_all(&mut **tx)
            .await
            .map_err(database_error)?;
        let mut found: HashMap<String, crate::store::SagaRecord> = HashMap::new();
        for row in &rows {
            let record = record(row)?;
            found.insert(record.saga_id.clone(), record);
        }
        for (i, id) in missed_creates {
            results[i] = Some(match found.get(&id) {
                Some(record) => Ok(Reply::Created(Created::Existing(Box::new(record.clone())))),
                None => Err(StoreError::NotFound { saga_id: id }),
            });
        }
    }

    Ok(())
}

/// Checkpoints: one fenced multi-row update, then classify the rows it did not touch.
/// The ids written, with their new versions.
async fn save(
    tx: &mut Tx<'_>,
    saves: &Saves<'_>,
    now: SystemTime,
    now_text: &str,
    results: &mut Results,
) -> Result<HashMap<String, i64>, StoreError> {
    let mut written: HashMap<String, i64> = HashMap::new();
    for chunk in saves.chunks(CHUNK) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "UPDATE saga_checkpoints SET state = v.state, step_index = v.step_index, \
             current_step = v.current_step, attempt = v.attempt, step_status = v.step_status, \
             context = COALESCE(v.context, saga_checkpoints.context), error = v.error, \
             failed_step = v.failed_step, version = saga_checkpoints.version + 1, owner = v.owner, \
             lease_expires_at = v.lease_until, waiting_for = v.waiting_for, \
             wake_at = CASE WHEN v.waiting_for IS NOT NULL AND EXISTS (SELECT 1 FROM saga_signals AS g \
               WHERE g.saga_id = v.saga_id \
               AND instr(' ' || v.waiting_for || ' ', ' ' || g.name || ' ') > 0 \
               AND g.consumed_at IS NULL AND g.rejected_at IS NULL) THEN v.now ELSE v.wake_at END, \
             recovery_count = CASE WHEN v.progress THEN 0 ELSE saga_checkpoints.recovery_count END, \
             parked_from = v.parked_from, \
             cancel_requested = CASE WHEN v.clear_cancel THEN NULL ELSE saga_checkpoints.cancel_requested END, \
             updated_at = v.now \
             FROM (SELECT column1 AS saga_id, column2 AS expected_version, column3 AS state, \
             column4 AS step_index, column5 AS current_step, column6 AS attempt, column7 AS context, \
             column8 AS error, column9 AS failed_step, column10 AS owner, column11 AS lease_until, \
             column12 AS progress, column13 AS parked_from, column14 AS clear_cancel, \
             column15 AS unless_cancelled, column16 AS now, column17 AS step_status, \
             column18 AS wake_at, column19 AS waiting_for FROM (",
        );
        query.push_values(chunk, |mut row, (_, cp)| {
            // Nobody holds a waiting saga: no owner, no lease, and when it is due.
            let waiting = cp.state == SagaState::Waiting;
            let wake_at = waiting
                .then(|| cp.wake_after.map(|d| to_text(later(now, d))))
                .flatten();
            row.push_bind(&*cp.saga_id)
                .push_bind(cp.expected_version)
                .push_bind(cp.state.as_str())
                .push_bind(i64::from(cp.step_index))
                .push_bind(cp.current_step)
                .push_bind(i64::from(cp.attempt))
                .push_bind(cp.context.as_deref())
                .push_bind(cp.error.as_deref())
                .push_bind(cp.failed_step.as_deref())
                .push_bind((!waiting).then_some(&*cp.owner))
                .push_bind((!waiting).then(|| to_text(later(now, cp.lease))))
                .push_bind(cp.progress)
                .push_bind(cp.parked_from.map(SagaState::as_str))
                .push_bind(cp.clear_cancel)
                .push_bind(cp.unless_cancelled)
                .push_bind(now_text)
                .push_bind(crate::status::encode(&cp.steps))
                .push_bind(wake_at)
                .push_bind(waiting.then_some(cp.waiting_for.as_deref()).flatten());
        });
        query.push(
            ")) AS v WHERE saga_checkpoints.saga_id = v.saga_id \
             AND saga_checkpoints.version = v.expected_version \
             AND (NOT v.unless_cancelled OR saga_checkpoints.cancel_requested IS NULL) \
             RETURNING saga_id, version",
        );
        let rows = query
            .build()
            .fetch_all(&mut **tx)
            .await
            .map_err(database_error)?;
        for row in rows {
            written.insert(row.try_get("saga_id")?, row.try_get("version")?);
        }
    }
    let mut missed_saves = Vec::new();
    for &(i, cp) in saves {
        match written.get(&*cp.saga_id) {
            Some(&version) => results[i] = Some(Ok(Reply::Saved(Saved::Written { version }))),
            None => missed_saves.push((i, cp)),
        }
    }
    if !missed_saves.is_empty() {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT saga_id, version, cancel_requested FROM saga_checkpoints WHERE saga_id IN (",
        );
        let mut list = query.separated(", ");
        for (_, cp) in &missed_saves {
            list.push_bind(&*cp.saga_id);
        }
        query.push(")");
        let rows = query
            .build()
            .fetch_all(&mut **tx)
            .await
            .map_err(database_error)?;
        let mut found: HashMap<String, (i64, Option<String>)> = HashMap::new();
        for row in rows {
            found.insert(
                row.try_get("saga_id")?,
                (row.try_get("version")?, row.try_get("cancel_requested")?),
            );
        }
        for (i, cp) in missed_saves {
            results[i] = Some(crate::store::sql::classify_miss(
                cp,
                found.get(&*cp.saga_id),
            ));
        }
    }

    Ok(written)
}

/// The signals consumed by the checkpoints that were written, and those they tell (a
/// child's end, to its parent).
async fn consume_and_tell(
    tx: &mut Tx<'_>,
    saves: &Saves<'_>,
    written: &HashMap<String, i64>,
    now_text: &str,
) -> Result<(), StoreError> {
    let consumed: Vec<i64> = saves
        .iter()
        .filter(|(_, cp)| written.contains_key(&*cp.saga_id))
        .flat_map(|(_, cp)| cp.consume_signals.iter().copied())
        .collect();
    if !consumed.is_empty() {
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE saga_signals SET consumed_at = ");
        query.push_bind(now_text).push(" WHERE id IN (");
        let mut ids = query.separated(", ");
        for id in &consumed {
            ids.push_bind(*id);
        }
        query.push(")");
        query
            .build()
            .execute(&mut **tx)
            .await
            .map_err(database_error)?;
    }

    for (_, cp) in saves {
        if let Some(tell) = &cp.tell
            && written.contains_key(&*cp.saga_id)
        {
            match super::signals::deliver_on(tx, tell).await {
                Ok(_) => {}
                Err(refused) if crate::store::operator::is_refusal(&refused) => {}
                Err(error) => return Err(error),
            }
        }
    }

    Ok(())
}

/// The audit rows of every write that took effect.
async fn audit(tx: &mut Tx<'_>, ops: &[Op], results: &Results) -> Result<(), StoreError> {
    let mut events = Vec::new();
    for (op, result) in ops.iter().zip(results) {
        let took_effect = matches!(
            result,
            Some(Ok(
                Reply::Created(Created::New { .. }) | Reply::Saved(Saved::Written { .. })
            ))
        );
        if took_effect {
            match op {
                Op::Create(saga) => events.push((&*saga.saga_id, &*saga.header, &saga.events)),
                Op::Save(cp) => events.push((&*cp.saga_id, &*cp.header, &cp.events)),
            }
        }
    }
    insert_events_many(tx, &events).await
}
