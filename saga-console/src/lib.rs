//! An operator console in the browser for the sagas of `saga-runtime`: server-rendered
//! pages over a store, with no JavaScript and no asset but the HTML itself. `saga serve`
//! (the `saga-cli` crate) serves it; an application can mount its router beside its own.
//!
//! - `/sagas`: filters by state, type, time range and id prefix, newest first, a page at a
//!   time (keyset paging, index scans only at a million rows), counts per state on top.
//! - `/sagas/{id}`: the header, the typed context as JSON, the audit log, and a timeline
//!   drawn as SVG (one bar per step attempt; compensations in a second colour; waits).
//! - `/stats`: counts by state and type, failure rate and compensations over a window, and
//!   the sagas that need a person.
//!
//! Pages refresh themselves (the same URL, so filters are kept). The console is read-only
//! unless given a token: an operator signs in with it, and then may cancel, resume, mark
//! failed, undo, signal and prune, each with a reason, each recorded in the audit log with
//! who did it. Forms carry a CSRF token (double-submit cookie, `SameSite=Strict`).
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn saga_runtime::SagaStore>) -> std::io::Result<()> {
//! let app = saga_console::Console::new(store)
//!     .token(std::env::var("SAGA_CONSOLE_TOKEN").ok())
//!     .router();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

mod actions;
mod html;
mod list;
mod saga;
mod timeline;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use saga_runtime::store::SagaStore;

/// The console: a store, and the token that allows actions (none: read-only).
#[derive(Clone)]
pub struct Console {
    store: Arc<dyn SagaStore>,
    token: Option<String>,
    /// Seconds between refreshes of a page that can change; 0: never.
    refresh: u32,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("store", &self.store)
            .field("read_only", &self.token.is_none())
            .field("refresh", &self.refresh)
            .finish()
    }
}

/// The console over `store`, read-only, as a router to serve or to mount beside an
/// application's own routes.
pub fn router(store: Arc<dyn SagaStore>) -> Router {
    Console::new(store).router()
}

impl Console {
    /// A read-only console over `store`.
    #[must_use]
    pub fn new(store: Arc<dyn SagaStore>) -> Self {
        Console {
            store,
            token: None,
            refresh: 5,
        }
    }

    /// Allows actions to operators who sign in with `token` (`None`, or an empty one:
    /// read-only).
    #[must_use]
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// How often a page that can change (the list, the stats, a saga that has not ended)
    /// reloads itself, keeping its filters: every 5 s by default; `Duration::ZERO`: never.
    #[must_use]
    pub fn refresh(mut self, every: std::time::Duration) -> Self {
        self.refresh = u32::try_from(every.as_secs()).unwrap_or(u32::MAX);
        self
    }

    /// Seconds between refreshes, if pages refresh.
    fn every(&self) -> Option<u32> {
        (self.refresh > 0).then_some(self.refresh)
    }

    /// The routes: `/`, `/sagas`, `/sagas/{id}`, `/stats`, `/login`, `/logout`, and the
    /// actions (`POST`).
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(|| async { Redirect::to("/sagas") }))
            .route("/sagas", get(list::sagas))
            .route("/sagas/{id}", get(saga::show))
            .route("/stats", get(list::stats))
            .route("/login", get(actions::login_form).post(actions::login))
            .route("/logout", post(actions::logout))
            .route("/sagas/{id}/actions", post(actions::act))
            .route("/prune", post(actions::prune))
            .with_state(Arc::new(self))
    }
}

type State = axum::extract::State<Arc<Console>>;

/// The cookie `name` of a request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Who is signed in: the operator's name, if the request carries the console's token.
fn signed_in(console: &Console, headers: &HeaderMap) -> Option<String> {
    let token = console.token.as_deref()?;
    let given = actions::unescape_form(cookie(headers, "saga_token")?);
    if !same(given.as_bytes(), token.as_bytes()) {
        return None;
    }
    let user = cookie(headers, "saga_user").unwrap_or("operator");
    Some(actions::unescape_form(user))
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An HTML page, with no caching.
fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

/// An error page.
fn error(status: StatusCode, message: &str, headers: &HeaderMap, console: &Console) -> Response {
    let user = signed_in(console, headers);
    let body = format!(
        "<h1>{}</h1><p class=\"error\">{}</p>",
        status,
        html::esc(message)
    );
    html(status, html::page("error", &body, None, user.as_deref()))
}
