//! The web service of `examples/web_service.rs`, the Rust counterpart of the deployment guide's FastAPI
//! app: `POST /backtests` runs a backtest saga per request, `POST /expenses` starts an
//! expense claim that waits for its approval, `POST /sagas/{id}/signals/{name}` delivers a
//! signal (the approval), `GET /sagas/{id}` shows one saga and its audit history,
//! `GET /metrics` serves the Prometheus registry.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use saga_runtime::prelude::*;
use saga_runtime::store::{NewSignal, Sent};
use saga_runtime::{AuditRecord, Executor, SagaRecord, StoreError, Waited};
use serde_json::{Value, json};

use crate::backtest::{BacktestInput, BacktestWorkflow};
use crate::expense::{Claim, FinanceDesk};

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    pub orchestrator: Orchestrator,
    pub backtests: Executor<BacktestWorkflow>,
    pub expenses: Executor<FinanceDesk>,
    pub registry: prometheus::Registry,
    /// How long an expense claim waits for its approval.
    pub approval_deadline: std::time::Duration,
    /// How long `POST /backtests` waits for the saga before answering 202 Accepted.
    pub wait: std::time::Duration,
}

/// The body of `POST /backtests`.
#[derive(Debug, Deserialize)]
pub struct BacktestRequest {
    pub strategy_id: i64,
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/backtests", post(start_backtest))
        .route("/expenses", post(start_expense))
        .route("/sagas/{id}", get(show_saga))
        .route("/sagas/{id}/signals/{name}", post(send_signal))
        .route("/metrics", get(metrics))
        .with_state(app)
}

/// Serves `router` on `listener` until `shutdown` resolves, passing each request's peer
/// address to the handlers.
///
/// # Errors
/// The server's I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

/// The caller's user id from `X-User-Id` (the deployment guide takes it from its auth middleware).
fn user_id(headers: &HeaderMap) -> String {
    headers
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .unwrap_or("anonymous")
        .to_owned()
}

async fn start_backtest(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<BacktestRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    let config = SagaConfig::new("backtest_workflow")
        .user_id(user_id(&headers))
        .ip_address(peer.ip().to_string());
    let input = BacktestInput {
        strategy_id: request.strategy_id,
    };
    // A client that retries with the same `Idempotency-Key` gets the same saga back.
    let saga_id = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map_or_else(saga_runtime::new_saga_id, str::to_owned);
    // A saga past its pivot retries until it succeeds: answer within `wait`, and let a slow
    // one go on (202 Accepted; `GET /sagas/{id}` shows where it stands).
    match app
        .backtests
        .execute_within(saga_id, &config, input, app.wait)
        .await
    {
        Ok(Waited::Ended(outcome)) => Json(json!({
            "status": outcome.state(),
            "saga_id": outcome.saga_id(),
            "context": outcome.context(),
            "error": outcome.error().map(ToString::to_string),
        }))
        .into_response(),
        Ok(Waited::Running { saga_id }) => (
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/sagas/{saga_id}"))],
            Json(json!({ "status": "running", "saga_id": saga_id })),
        )
            .into_response(),
        Ok(other) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("an outcome this service does not know: {other:?}"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Starts an expense claim; it waits (durably) for `POST /sagas/{id}/signals/approval`.
async fn start_expense(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<Claim>, JsonRejection>,
) -> Response {
    let Json(claim) = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    let mut config = SagaConfig::new("expense_claim")
        .user_id(user_id(&headers))
        .ip_address(peer.ip().to_string());
    config.default_timeout = app.approval_deadline;
    match app.expenses.execute(&config, claim).await {
        Ok(outcome) => (
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/sagas/{}", outcome.saga_id()))],
            Json(json!({ "status": outcome.state(), "saga_id": outcome.saga_id() })),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Delivers signal `name` with the request body (JSON) as its payload; an
/// `Idempotency-Key` header makes a retried delivery count once.
async fn send_signal(
    State(app): State<Arc<App>>,
    Path((id, name)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut sender = saga_runtime::Actor::new(user_id(&headers));
    sender.ip_address = Some(peer.ip().to_string());
    let mut signal = NewSignal::new(&id, &name, body, sender);
    signal.key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match app.orchestrator.send_signal(signal).await {
        Ok(Sent::Delivered { id: signal_id }) => (
            StatusCode::ACCEPTED,
            Json(json!({ "status": "delivered", "signal_id": signal_id })),
        )
            .into_response(),
        Ok(Sent::Duplicate { id: signal_id }) => {
            Json(json!({ "status": "duplicate", "signal_id": signal_id })).into_response()
        }
        Ok(other) => Json(json!({ "status": format!("{other:?}") })).into_response(),
        Err(SagaError::Store(e @ StoreError::NotFound { .. })) => error(StatusCode::NOT_FOUND, e),
        Err(SagaError::Store(e @ StoreError::InvalidState { .. })) => {
            error(StatusCode::CONFLICT, e)
        }
        Err(SagaError::Store(
            e @ (StoreError::UnknownSignal { .. } | StoreError::Invalid { .. }),
        )) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

fn saga_json(record: &SagaRecord, history: Vec<AuditRecord>) -> Value {
    let context: Value = serde_json::from_str(&record.context).unwrap_or(Value::Null);
    json!({
        "saga_id": record.saga_id,
        "saga_type": record.saga_type,
        "state": record.state,
        "current_step": record.current_step,
        "attempt": record.attempt,
        "error": record.error,
        "created_at": time(record.created_at),
        "updated_at": time(record.updated_at),
        "context": context,
        // What each step has done; names from the definition, which serves this type.
        "steps": record.steps.iter().zip(definition(record).steps())
            .map(|(status, spec)| json!({
                "step": spec.name(),
                "status": status.phase(),
                "attempt": status.attempt,
            }))
            .collect::<Vec<_>>(),
        "history": history.into_iter().map(|e| json!({
            "event_type": e.event_type,
            "step_name": e.step_name,
            "attempt": e.attempt,
            "error_message": e.error_message,
            "user_id": e.user_id,
            "ip_address": e.ip_address,
            "timestamp": time(e.timestamp),
        })).collect::<Vec<_>>(),
    })
}

/// The definition of a stored saga, among those this service runs.
fn definition(record: &SagaRecord) -> &'static saga_runtime::definition::Definition {
    if record.definition == FinanceDesk::DEFINITION.name() {
        FinanceDesk::DEFINITION
    } else {
        BacktestWorkflow::DEFINITION
    }
}

async fn show_saga(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let record = match app.orchestrator.load(&id).await {
        Ok(Some(record)) => record,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no saga `{id}`")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    match app
        .orchestrator
        .audit_log(&AuditQuery::new().saga_id(&id))
        .await
    {
        Ok(history) => Json(saga_json(&record, history)).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let families = app.registry.gather();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Builds the app over `store`: a Prometheus registry with the saga metrics, an
/// orchestrator recording into it, and the backtest workflow registered.
///
/// # Errors
/// The metrics or the orchestrator could not be set up.
pub fn app(
    store: impl saga_runtime::store::IntoStore,
    workflow: BacktestWorkflow,
    stats_interval: std::time::Duration,
) -> Result<Arc<App>, Box<dyn std::error::Error + Send + Sync>> {
    let registry = prometheus::Registry::new();
    let metrics = saga_runtime::SagaMetrics::register(&registry)?;
    let orchestrator = Orchestrator::builder(store)
        .metrics(metrics)
        .stats_interval(Some(stats_interval))
        .build()?;
    let backtests = orchestrator.register(workflow);
    let expenses = orchestrator.register(FinanceDesk::default());
    Ok(Arc::new(App {
        orchestrator,
        backtests,
        expenses,
        registry,
        wait: std::time::Duration::from_secs(10),
        approval_deadline: std::time::Duration::from_secs(3600),
    }))
}
