//! What a signed-in operator may do: sign in and out, and act on a saga (cancel, resume,
//! mark failed, undo, signal) or prune, each with a reason, each recorded in the audit log
//! with who did it. Forms carry a CSRF token that must match the `saga_csrf` cookie
//! (double submit; every cookie is `SameSite=Strict`), and a request another site sent
//! (`Sec-Fetch-Site: cross-site`) is refused.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use axum::Form;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::html::{esc, page, url};
use super::{Console, State, cookie, error, html, same, signed_in};
use saga_runtime::SagaState;
use saga_runtime::store::{Actor, NewSignal, SagaRecord};

/// A fresh, unguessable token: a random saga id's 122 bits from the operating system's
/// generator, as 32 hex digits.
fn random_token() -> String {
    saga_runtime::new_saga_id().replace('-', "")
}

/// The request's CSRF token, and the cookie to set if it had none.
pub(super) fn csrf(headers: &HeaderMap) -> (String, Option<String>) {
    match cookie(headers, "saga_csrf") {
        Some(token) if token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (token.to_owned(), None)
        }
        _ => {
            let token = random_token();
            let cookie = format!("saga_csrf={token}; Path=/; HttpOnly; SameSite=Strict");
            (token, Some(cookie))
        }
    }
}

pub(super) fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// `%XX`-decoded (and `+` as a space), as a form or cookie value is.
pub(super) fn unescape_form(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Why a form is refused, if it is: a cross-site request, a CSRF token that does not match
/// the cookie, or (`needs_sign_in`) no signed-in operator.
fn refused(
    console: &Console,
    headers: &HeaderMap,
    form_csrf: &str,
    needs_sign_in: bool,
) -> Option<(StatusCode, &'static str)> {
    if console.token.is_none() {
        return Some((
            StatusCode::FORBIDDEN,
            "the console is read-only: start it with a token to act on sagas",
        ));
    }
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "cross-site")
    {
        return Some((
            StatusCode::FORBIDDEN,
            "refused: the form was sent from another site",
        ));
    }
    let matches = cookie(headers, "saga_csrf")
        .is_some_and(|token| !form_csrf.is_empty() && same(token.as_bytes(), form_csrf.as_bytes()));
    if !matches {
        return Some((
            StatusCode::FORBIDDEN,
            "refused: the form's CSRF token does not match (reload the page and try again)",
        ));
    }
    if needs_sign_in && signed_in(console, headers).is_none() {
        return Some((
            StatusCode::FORBIDDEN,
            "refused: sign in with the console's token to act on sagas",
        ));
    }
    None
}

/// The action forms that fit `record`'s state.
pub(super) fn forms(record: &SagaRecord, signed_in: bool, csrf: &str) -> String {
    if !signed_in {
        return "<p class=\"note\" id=\"read-only\"><a href=\"/login\">Sign in</a> with the console's token to act on this saga.</p>".to_owned();
    }
    let state = record.state;
    let mut actions: Vec<(&str, &str)> = Vec::new();
    if matches!(state, SagaState::Running | SagaState::Waiting) {
        actions.push(("cancel", "cancel (compensate)"));
    }
    if matches!(
        state,
        SagaState::Parked
            | SagaState::CompensationFailed
            | SagaState::Running
            | SagaState::Compensating
            | SagaState::Waiting
    ) {
        actions.push(("resume", "resume"));
    }
    if matches!(
        state,
        SagaState::Parked
            | SagaState::CompensationFailed
            | SagaState::Running
            | SagaState::Compensating
    ) {
        actions.push(("fail", "mark failed"));
    }
    if state == SagaState::Completed {
        actions.push(("undo", "undo (compensate)"));
    }
    let id = url(&record.saga_id);
    let mut out = String::from("<h2>Actions</h2><div class=\"actions\">");
    for (action, label) in actions {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/sagas/{id}/actions\" data-action=\"{action}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"action\" value=\"{action}\">\
             <input name=\"reason\" placeholder=\"reason\" required>\
             <button type=\"submit\">{label}</button></form>"
        );
    }
    if state.is_live() && !record.signals.is_empty() {
        let mut names = String::new();
        for name in &record.signals {
            let _ = write!(names, "<option>{}</option>", esc(name));
        }
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/sagas/{id}/actions\" data-action=\"signal\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"action\" value=\"signal\">\
             <select name=\"signal\">{names}</select>\
             <input name=\"payload\" placeholder=\"payload (JSON)\" required>\
             <input name=\"key\" placeholder=\"key (optional)\">\
             <input name=\"reason\" placeholder=\"reason\" required>\
             <button type=\"submit\">send signal</button></form>"
        );
    }
    out.push_str("</div>");
    out
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    signal: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    key: String,
}

pub(super) async fn act(
    console: State,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some((status, why)) = refused(&console, &headers, &form.csrf, true) {
        return error(status, why, &headers, &console);
    }
    let user = signed_in(&console, &headers).unwrap_or_else(|| "operator".to_owned());
    let actor = Actor::new(user);
    let reason = form.reason.trim();
    if reason.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "a reason is required",
            &headers,
            &console,
        );
    }
    let store = &console.store;
    let done = match form.action.as_str() {
        "cancel" => store.request_cancel(&id, reason, &actor).await.map(drop),
        "resume" => store.resume(&id, reason, &actor).await.map(drop),
        "fail" => store.mark_failed(&id, reason, &actor).await.map(drop),
        "undo" => store.request_undo(&id, reason, &actor).await.map(drop),
        "signal" => {
            let mut signal =
                NewSignal::new(id.clone(), form.signal.clone(), form.payload.clone(), actor);
            signal.key = Some(form.key.clone()).filter(|k| !k.is_empty());
            store.send_signal(signal).await.map(drop)
        }
        other => {
            let message = format!("no action `{other}`");
            return error(StatusCode::BAD_REQUEST, &message, &headers, &console);
        }
    };
    match done {
        Ok(()) => Redirect::to(&format!("/sagas/{}", url(&id))).into_response(),
        Err(e) => error(StatusCode::CONFLICT, &e.to_string(), &headers, &console),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct PruneForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    older_than: String,
    #[serde(default)]
    dry_run: Option<String>,
}

pub(super) async fn prune(
    console: State,
    headers: HeaderMap,
    Form(form): Form<PruneForm>,
) -> Response {
    if let Some((status, why)) = refused(&console, &headers, &form.csrf, true) {
        return error(status, why, &headers, &console);
    }
    let user = signed_in(&console, &headers).unwrap_or_else(|| "operator".to_owned());
    let age = match humantime::parse_duration(form.older_than.trim()) {
        Ok(age) if age >= Duration::from_secs(3600) => age,
        _ => {
            let message = "`older than` must be a duration of at least an hour, such as 30d";
            return error(StatusCode::BAD_REQUEST, message, &headers, &console);
        }
    };
    let before = SystemTime::now()
        .checked_sub(age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let dry_run = form.dry_run.is_some();
    match console
        .store
        .prune(before, dry_run, &Actor::new(user.clone()))
        .await
    {
        Ok(report) => {
            let verb = if dry_run { "would delete" } else { "deleted" };
            let body = format!(
                "<h1>Prune</h1><p id=\"pruned\">{verb} {} finished sagas and {} audit rows older than {}.</p><p><a href=\"/stats\">back</a></p>",
                report.sagas,
                report.audit_rows,
                esc(form.older_than.trim())
            );
            html(StatusCode::OK, page("prune", &body, None, Some(&user)))
        }
        Err(e) => error(StatusCode::CONFLICT, &e.to_string(), &headers, &console),
    }
}

/// The prune form, for the stats page of a signed-in operator.
pub(super) fn prune_form(csrf: &str) -> String {
    format!(
        "<h2>Retention</h2><form method=\"post\" action=\"/prune\" class=\"filters\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>finished sagas and audit rows older than<input name=\"older_than\" value=\"90d\"></label>\
         <label>dry run<input type=\"checkbox\" name=\"dry_run\" checked></label>\
         <button type=\"submit\">prune</button></form>"
    )
}

pub(super) async fn login_form(console: State, headers: HeaderMap) -> Response {
    if console.token.is_none() {
        let body = "<h1>Sign in</h1><p class=\"note\">This console is read-only: it was started without a token.</p>";
        return html(StatusCode::OK, page("sign in", body, None, None));
    }
    let (csrf, cookie) = csrf(&headers);
    let body = format!(
        "<h1>Sign in</h1><form method=\"post\" action=\"/login\" class=\"filters\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>your name<input name=\"user\" required></label>\
         <label>console token<input type=\"password\" name=\"token\" required></label>\
         <button type=\"submit\">sign in</button></form>"
    );
    let mut response = html(StatusCode::OK, page("sign in", &body, None, None));
    if let Some(cookie) = cookie {
        set_cookie(&mut response, &cookie);
    }
    response
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    token: String,
}

pub(super) async fn login(
    console: State,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Some((status, why)) = refused(&console, &headers, &form.csrf, false) {
        return error(status, why, &headers, &console);
    }
    let Some(token) = console.token.as_deref() else {
        return error(StatusCode::FORBIDDEN, "read-only", &headers, &console);
    };
    if !same(form.token.as_bytes(), token.as_bytes()) {
        return error(StatusCode::FORBIDDEN, "wrong token", &headers, &console);
    }
    let user: String = form
        .user
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let user = if user.is_empty() {
        "operator".to_owned()
    } else {
        user
    };
    let mut response = Redirect::to("/sagas").into_response();
    set_cookie(
        &mut response,
        &format!(
            "saga_token={}; Path=/; HttpOnly; SameSite=Strict",
            url(token)
        ),
    );
    set_cookie(
        &mut response,
        &format!(
            "saga_user={}; Path=/; HttpOnly; SameSite=Strict",
            url(&user)
        ),
    );
    response
}

pub(super) async fn logout() -> Response {
    let mut response = Redirect::to("/sagas").into_response();
    for name in ["saga_token", "saga_user"] {
        set_cookie(
            &mut response,
            &format!("{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::unescape_form;
    use crate::html::url;

    #[test]
    fn form_values_decode_and_round_trip_through_url() {
        assert_eq!(unescape_form("grace+hopper%21"), "grace hopper!");
        assert_eq!(unescape_form("100%"), "100%");
        assert_eq!(unescape_form("%zz%4"), "%zz%4");
        assert_eq!(unescape_form("%FF"), "\u{FFFD}");
        for text in [
            "",
            "a+b c",
            "ünïcødé 🚀 東京",
            "nul\0;=&%",
            &"x".repeat(10_000),
        ] {
            assert_eq!(unescape_form(&url(text)), text);
        }
    }
}
