//! One saga: its header, its context as formatted JSON, its timeline and its audit log,
//! and (for a signed-in operator) the actions that fit its state.

use std::fmt::Write as _;
use std::time::SystemTime;

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::html::{badge, esc, time, url};
use super::{State, actions, error, html, signed_in, timeline};
use saga_runtime::SagaState;
use saga_runtime::audit::AuditQuery;
use saga_runtime::store::SagaRecord;

/// At most this many audit rows are shown (and drawn).
const EVENTS: u32 = 2_000;

pub(super) async fn show(console: State, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let user = signed_in(&console, &headers);
    let record = match console.store.load(&id).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            let message = format!("no saga `{id}`");
            return error(StatusCode::NOT_FOUND, &message, &headers, &console);
        }
        Err(e) => return error(StatusCode::BAD_GATEWAY, &e.to_string(), &headers, &console),
    };
    let query = AuditQuery::new().saga_id(id.clone()).limit(EVENTS);
    let events = match console.store.audit_log(&query).await {
        Ok(events) => events,
        Err(e) => return error(StatusCode::BAD_GATEWAY, &e.to_string(), &headers, &console),
    };
    let live = record.state.is_live();
    let mut body = format!(
        "<h1>Saga <span id=\"saga-id\">{}</span> {}</h1>",
        esc(&record.saga_id),
        badge(record.state)
    );
    body.push_str(&header(&record));
    let cookie = if console.token.is_some() {
        let (csrf, cookie) = actions::csrf(&headers);
        body.push_str(&actions::forms(&record, user.is_some(), &csrf));
        cookie
    } else {
        body.push_str(
            "<p class=\"note\">Read-only: start the console with a token to act on sagas.</p>",
        );
        None
    };
    body.push_str(&steps(&record));
    body.push_str("<h2>Timeline</h2>");
    finish(&mut body, &record, &events, live);
    let title = format!("saga {id}");
    let every = refresh(console.every(), live, user.is_some());
    let mut response = html(
        StatusCode::OK,
        super::html::page(&title, &body, every, user.as_deref()),
    );
    if let Some(cookie) = cookie {
        actions::set_cookie(&mut response, &cookie);
    }
    response
}

/// A live saga's page refreshes itself every `every` seconds; an ended one does not
/// change, and a signed-in operator's page holds forms that a reload would empty while
/// they are being filled in (a signal's payload, a reason), so it is reloaded by hand.
fn refresh(every: Option<u32>, live: bool, signed_in: bool) -> Option<u32> {
    every.filter(|_| live && !signed_in)
}

fn header(record: &SagaRecord) -> String {
    let mut out = String::from("<dl id=\"header\">");
    let mut item = |name: &str, value: String| {
        let _ = write!(out, "<dt>{name}</dt><dd data-field=\"{name}\">{value}</dd>");
    };
    item("type", esc(&record.saga_type));
    item("definition", esc(&record.definition));
    item("state", badge(record.state));
    item(
        "step",
        format!(
            "{} (index {}, attempt {})",
            esc(record.current_step.as_deref().unwrap_or("–")),
            record.step_index,
            record.attempt
        ),
    );
    item("owner", esc(record.owner.as_deref().unwrap_or("none")));
    if let Some(lease) = record.lease_expires_at {
        item("lease until", time(lease));
    }
    if record.state == SagaState::Waiting {
        let due = record.wake_at.map_or_else(|| "–".to_owned(), time);
        let why = record.waiting_for.as_deref().unwrap_or("a delay");
        item("waiting for", format!("{} (due {due})", esc(why)));
    }
    item("user", esc(record.user_id.as_deref().unwrap_or("–")));
    item(
        "IP address",
        esc(record.ip_address.as_deref().unwrap_or("–")),
    );
    item("created", time(record.created_at));
    item("updated", time(record.updated_at));
    if let Some(error) = &record.error {
        item(
            "error",
            format!("<span class=\"error\">{}</span>", esc(error)),
        );
    }
    if let Some(step) = &record.failed_step {
        item("failed step", esc(step));
    }
    if let Some(reason) = &record.cancel_requested {
        item("cancellation requested", esc(reason));
    }
    item("recoveries", record.recovery_count.to_string());
    if let Some((parent, _)) = record.saga_id.rsplit_once('/') {
        item(
            "parent",
            format!("<a href=\"/sagas/{}\">{}</a>", url(parent), esc(parent)),
        );
    }
    out.push_str("</dl>");
    out
}

/// Each step's status; a waiting step's says what for and until when.
fn steps(record: &SagaRecord) -> String {
    if record.steps.is_empty() {
        return String::new();
    }
    let names = record.step_names();
    let mut out = String::from(
        "<h2>Steps</h2><table id=\"steps\"><thead><tr><th>step</th><th>status</th>\
         <th>until</th></tr></thead><tbody>",
    );
    for (index, status) in record.steps.iter().enumerate() {
        let name = names
            .get(index)
            .cloned()
            .unwrap_or_else(|| format!("#{index}"));
        let until = status
            .until()
            .filter(|_| status.run == saga_runtime::RunStatus::Waiting)
            .map_or_else(String::new, time);
        let _ = write!(
            out,
            "<tr data-step=\"{}\"><td>{}</td><td>{}</td><td>{until}</td></tr>",
            esc(&name),
            esc(&name),
            esc(&status.to_string())
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The timeline, the context and the audit log.
fn finish(
    body: &mut String,
    record: &SagaRecord,
    events: &[saga_runtime::AuditRecord],
    live: bool,
) {
    let until = if live {
        SystemTime::now()
    } else {
        events.last().map_or(record.updated_at, |e| e.timestamp)
    };
    let bars = timeline::bars(events, until);
    // Rows in the order steps first appear in the log.
    let mut order: Vec<String> = Vec::new();
    for step in events.iter().filter_map(|e| e.step_name.as_deref()) {
        if !order.iter().any(|seen| seen == step) {
            order.push(step.to_owned());
        }
    }
    body.push_str(&timeline::svg(&bars, &order));
    let context = serde_json::from_str::<serde_json::Value>(&record.context)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or_else(|_| record.context.clone());
    let _ = write!(
        body,
        "<h2>Context</h2><pre id=\"context\">{}</pre>",
        esc(&context)
    );
    body.push_str(
        "<h2>Audit log</h2><table id=\"audit\"><thead><tr><th>#</th><th>time</th><th>event</th>\
         <th>step</th><th>attempt</th><th>error</th><th>details</th><th>by</th></tr></thead><tbody>",
    );
    for e in events {
        let _ = write!(
            body,
            "<tr data-event=\"{event}\"><td>{}</td><td>{}</td><td>{event}</td><td>{}</td><td>{}</td>\
             <td class=\"error\">{}</td><td>{}</td><td>{}</td></tr>",
            e.id,
            time(e.timestamp),
            esc(e.step_name.as_deref().unwrap_or("")),
            e.attempt.map(|a| a.to_string()).unwrap_or_default(),
            esc(e.error_message.as_deref().unwrap_or("")),
            esc(e.details.as_deref().unwrap_or("")),
            esc(e.user_id.as_deref().unwrap_or("")),
            event = esc(&e.event_type),
        );
    }
    body.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::refresh;

    #[test]
    fn only_a_live_saga_seen_read_only_reloads_itself() {
        assert_eq!(refresh(Some(5), true, false), Some(5));
        assert_eq!(refresh(Some(5), false, false), None, "an ended saga");
        assert_eq!(refresh(Some(5), true, true), None, "forms being filled in");
        assert_eq!(refresh(None, true, false), None, "refresh turned off");
    }
}
