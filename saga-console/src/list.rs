//! The list of sagas (filters, counts, keyset paging) and the stats page.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::html::{badge, esc, page, time, url};
use super::{State, error, html, signed_in};
use saga_runtime::SagaState;
use saga_runtime::store::{SagaQuery, SagaRecord, StateCount};

/// Rows per page.
const PAGE: u32 = 50;

#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct Filters {
    #[serde(default)]
    state: String,
    #[serde(default, rename = "type")]
    saga_type: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    after: String,
    /// `off`: the page does not reload itself (a filter being typed in is kept).
    #[serde(default)]
    live: String,
}

impl Filters {
    /// Whether the page reloads itself.
    fn live(&self) -> bool {
        self.live != "off"
    }

    /// The filters as a query string (without the page), for links that keep them.
    fn query(&self) -> String {
        [
            ("state", &self.state),
            ("type", &self.saga_type),
            ("id", &self.id),
            ("since", &self.since),
            ("until", &self.until),
            ("live", &self.live),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", url(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// `2026-11-28T18:10` (a `datetime-local` input) or `2026-11-28 18:10:02`, as UTC.
fn parse_time(text: &str) -> Result<Option<SystemTime>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let full = if text.len() == 16 {
        format!("{text}:00")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339_weak(&full.replacen('T', " ", 1))
        .map(Some)
        .map_err(|e| format!("`{text}` is not a time (YYYY-MM-DD HH:MM, UTC): {e}"))
}

fn micros(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros()
}

/// The cursor `<micros>.<id>` of the last row of a page.
fn parse_cursor(text: &str) -> Result<Option<(SystemTime, String)>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let (at, id) = text
        .split_once('.')
        .ok_or_else(|| "the page cursor is malformed".to_owned())?;
    let at: u64 = at
        .parse()
        .map_err(|_| "the page cursor is malformed".to_owned())?;
    Ok(Some((
        UNIX_EPOCH + Duration::from_micros(at),
        id.to_owned(),
    )))
}

fn query_of(filters: &Filters) -> Result<SagaQuery, String> {
    let mut query = SagaQuery::new().limit(PAGE + 1);
    if !filters.state.is_empty() {
        let state: SagaState = filters
            .state
            .parse()
            .map_err(|_| format!("`{}` is not a state", filters.state))?;
        query = query.state(state);
    }
    if !filters.saga_type.is_empty() {
        query = query.saga_type(filters.saga_type.clone());
    }
    if !filters.id.is_empty() {
        query = query.id_prefix(filters.id.clone());
    }
    if let Some(since) = parse_time(&filters.since)? {
        query = query.created_since(since);
    }
    if let Some(until) = parse_time(&filters.until)? {
        query = query.created_before(until);
    }
    if let Some((at, id)) = parse_cursor(&filters.after)? {
        query = query.after(at, id);
    }
    Ok(query)
}

/// Counts per state, summed over types (or for one type).
fn per_state(counts: &[StateCount], saga_type: &str) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for count in counts
        .iter()
        .filter(|c| saga_type.is_empty() || c.saga_type == saga_type)
    {
        *out.entry(count.state.as_str()).or_insert(0) += count.count;
    }
    out
}

pub(super) async fn sagas(
    console: State,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Response {
    let user = signed_in(&console, &headers);
    let query = match query_of(&filters) {
        Ok(query) => query,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message, &headers, &console),
    };
    let now = SystemTime::now();
    let (rows, counts) =
        match tokio::try_join!(console.store.list(&query), console.store.stats(now, now)) {
            Ok(found) => found,
            Err(e) => return error(StatusCode::BAD_GATEWAY, &e.to_string(), &headers, &console),
        };
    let mut body = String::from("<h1>Sagas</h1><p class=\"counts\">");
    let counts = per_state(&counts, &filters.saga_type);
    for state in SagaState::ALL {
        let n = counts.get(state.as_str()).copied().unwrap_or(0);
        let _ = write!(
            body,
            "<a href=\"/sagas?state={s}\" data-state=\"{s}\">{} <b>{n}</b></a>",
            badge(state),
            s = state.as_str()
        );
    }
    body.push_str("</p>");
    let options: String = std::iter::once(String::from("<option value=\"\">any</option>"))
        .chain(SagaState::ALL.iter().map(|s| {
            let selected = if filters.state == s.as_str() {
                " selected"
            } else {
                ""
            };
            format!("<option{selected}>{}</option>", s.as_str())
        }))
        .collect();
    let _ = write!(
        body,
        "<form class=\"filters\" method=\"get\" action=\"/sagas\">\
         <label>state<select name=\"state\">{options}</select></label>\
         <label>type<input name=\"type\" value=\"{}\"></label>\
         <label>id starts with<input name=\"id\" value=\"{}\"></label>\
         <label>created since (UTC)<input type=\"datetime-local\" name=\"since\" value=\"{}\"></label>\
         <label>created before (UTC)<input type=\"datetime-local\" name=\"until\" value=\"{}\"></label>\
         {paused}<button type=\"submit\">filter</button> <a href=\"/sagas\">clear</a> {toggle}</form>",
        esc(&filters.saga_type),
        esc(&filters.id),
        esc(&filters.since),
        esc(&filters.until),
        paused = if filters.live() {
            ""
        } else {
            "<input type=\"hidden\" name=\"live\" value=\"off\">"
        },
        toggle = live_toggle(&filters, console.every().is_some()),
    );
    let more = rows.len() > PAGE as usize;
    let shown = &rows[..rows.len().min(PAGE as usize)];
    body.push_str(
        "<table id=\"sagas\"><thead><tr><th>id</th><th>type</th><th>state</th><th>step</th>\
         <th>attempt</th><th>created</th><th>updated</th><th>error</th></tr></thead><tbody>",
    );
    for row in shown {
        let error = row.error.as_deref().unwrap_or("");
        let error: String = error.chars().take(160).collect();
        let _ = write!(
            body,
            "<tr data-id=\"{id}\"><td><a href=\"/sagas/{link}\">{id}</a></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td><td>{}</td></tr>",
            esc(&row.saga_type),
            badge(row.state),
            esc(row.current_step.as_deref().unwrap_or("")),
            row.attempt,
            time(row.created_at),
            time(row.updated_at),
            esc(&error),
            id = esc(&row.saga_id),
            link = url(&row.saga_id),
        );
    }
    body.push_str("</tbody></table>");
    if shown.is_empty() {
        body.push_str("<p class=\"note\">No saga matches.</p>");
    }
    if more && let Some(last) = shown.last() {
        let filters_query = filters.query();
        let sep = if filters_query.is_empty() { "" } else { "&" };
        let _ = write!(
            body,
            "<p><a id=\"next\" href=\"/sagas?{filters_query}{sep}after={}.{}\">next page →</a></p>",
            micros(last.created_at),
            url(&last.saga_id)
        );
    }
    let every = console.every().filter(|_| filters.live());
    html(StatusCode::OK, page("Sagas", &body, every, user.as_deref()))
}

/// A link to the same page with its reloading paused, or resumed (none if the console does
/// not reload pages).
fn live_toggle(filters: &Filters, reloads: bool) -> String {
    if !reloads {
        return String::new();
    }
    let other = Filters {
        live: if filters.live() {
            "off".into()
        } else {
            String::new()
        },
        ..filters.clone()
    };
    let label = if filters.live() {
        "pause reloading"
    } else {
        "reload every few seconds"
    };
    format!(
        "<a id=\"live\" href=\"/sagas?{}\">{label}</a>",
        other.query()
    )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Window {
    #[serde(default)]
    window: String,
}

pub(super) async fn stats(console: State, headers: HeaderMap, Query(w): Query<Window>) -> Response {
    let user = signed_in(&console, &headers);
    let label = if w.window.is_empty() {
        "24h"
    } else {
        w.window.as_str()
    };
    let window = match humantime::parse_duration(label) {
        Ok(d) if d <= Duration::from_secs(366 * 86_400) => d,
        _ => {
            let message = format!("`{label}` is not a window such as 1h, 24h or 7d");
            return error(StatusCode::BAD_REQUEST, &message, &headers, &console);
        }
    };
    let now = SystemTime::now();
    let since = now.checked_sub(window).unwrap_or(UNIX_EPOCH);
    let stuck = now
        .checked_sub(Duration::from_secs(3600))
        .unwrap_or(UNIX_EPOCH);
    let overdue = now
        .checked_sub(Duration::from_secs(60))
        .unwrap_or(UNIX_EPOCH);
    let parked = SagaQuery::new().state(SagaState::Parked).limit(50);
    let broken = SagaQuery::new()
        .state(SagaState::CompensationFailed)
        .limit(50);
    let found = tokio::try_join!(
        console.store.stats(stuck, overdue),
        console.store.event_counts(since),
        console.store.list(&parked),
        console.store.list(&broken),
    );
    let (counts, events, parked, broken) = match found {
        Ok(found) => found,
        Err(e) => return error(StatusCode::BAD_GATEWAY, &e.to_string(), &headers, &console),
    };
    let mut body =
        String::from("<h1>Stats</h1><form class=\"filters\" method=\"get\" action=\"/stats\">");
    for option in ["1h", "24h", "7d", "30d"] {
        let _ = write!(body, "<a href=\"/stats?window={option}\">{option}</a>");
    }
    let _ = write!(
        body,
        "<label>window<input name=\"window\" value=\"{}\"></label><button>show</button></form>",
        esc(label)
    );
    now_table(&mut body, &counts);
    window_table(&mut body, label, &events);
    needy_table(&mut body, &broken, &parked);
    if user.is_some() {
        let (csrf, cookie) = super::actions::csrf(&headers);
        body.push_str(&super::actions::prune_form(&csrf));
        let mut response = html(StatusCode::OK, page("Stats", &body, None, user.as_deref()));
        if let Some(cookie) = cookie {
            super::actions::set_cookie(&mut response, &cookie);
        }
        return response;
    }
    html(
        StatusCode::OK,
        page("Stats", &body, console.every(), user.as_deref()),
    )
}

/// The stats page's counts by type and state, now.
fn now_table(body: &mut String, counts: &[StateCount]) {
    body.push_str("<h2>Now, by type and state</h2><table id=\"states\"><thead><tr><th>type</th>");
    for state in SagaState::ALL {
        let _ = write!(body, "<th>{}</th>", state.as_str());
    }
    body.push_str("<th>stuck (1 h)</th><th>overdue waits</th></tr></thead><tbody>");
    let mut by_type: BTreeMap<&str, Vec<&StateCount>> = BTreeMap::new();
    for count in counts {
        by_type.entry(&count.saga_type).or_default().push(count);
    }
    for (saga_type, counts) in &by_type {
        let _ = write!(body, "<tr><td>{}</td>", esc(saga_type));
        for state in SagaState::ALL {
            let n: u64 = counts
                .iter()
                .filter(|c| c.state == state)
                .map(|c| c.count)
                .sum();
            let _ = write!(body, "<td>{n}</td>");
        }
        let stuck: u64 = counts.iter().map(|c| c.stuck).sum();
        let overdue: u64 = counts.iter().map(|c| c.overdue).sum();
        let _ = write!(body, "<td>{stuck}</td><td>{overdue}</td></tr>");
    }
    body.push_str("</tbody></table>");
}

/// The stats page's started, ended and compensated sagas over the window.
fn window_table(body: &mut String, label: &str, events: &[saga_runtime::store::EventCount]) {
    let _ = write!(
        body,
        "<h2>Over the last {}</h2><table id=\"window\"><thead><tr><th>type</th><th>started</th>\
         <th>completed</th><th>failed</th><th>failure rate</th><th>compensations</th>\
         <th>compensations failed</th></tr></thead><tbody>",
        esc(label)
    );
    let mut by_type: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for e in events {
        *by_type
            .entry(&e.saga_type)
            .or_default()
            .entry(&e.event_type)
            .or_insert(0) += e.count;
    }
    for (saga_type, n) in &by_type {
        let get = |k: &str| n.get(k).copied().unwrap_or(0);
        let (completed, failed) = (get("saga_completed"), get("saga_failed"));
        let rate = if completed + failed == 0 {
            "–".to_owned()
        } else {
            format!(
                "{:.1} %",
                100.0 * failed as f64 / (completed + failed) as f64
            )
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{completed}</td><td>{failed}</td><td>{rate}</td>\
             <td>{}</td><td>{}</td></tr>",
            esc(saga_type),
            get("saga_started"),
            get("compensation_executed"),
            get("compensation_failed"),
        );
    }
    body.push_str("</tbody></table>");
}

/// The stats page's sagas that need a person: parked, or failed to compensate.
fn needy_table(body: &mut String, broken: &[SagaRecord], parked: &[SagaRecord]) {
    body.push_str("<h2>Needing a person</h2>");
    let needy: Vec<_> = broken.iter().chain(parked.iter()).collect();
    if needy.is_empty() {
        body.push_str("<p class=\"note\">None: no saga is parked or failed to compensate.</p>");
    } else {
        body.push_str("<table id=\"needy\"><thead><tr><th>id</th><th>type</th><th>state</th><th>error</th><th>updated</th></tr></thead><tbody>");
        for row in needy {
            let _ = write!(
                body,
                "<tr><td><a href=\"/sagas/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                url(&row.saga_id),
                esc(&row.saga_id),
                esc(&row.saga_type),
                badge(row.state),
                esc(row.error.as_deref().unwrap_or("")),
                time(row.updated_at)
            );
        }
        body.push_str("</tbody></table>");
    }
}

#[cfg(test)]
mod tests {
    use super::{Filters, live_toggle};

    #[test]
    fn reloading_can_be_paused_and_the_pause_keeps_the_filters() {
        let filters = Filters {
            state: "failed".into(),
            id: "order 7".into(),
            ..Filters::default()
        };
        assert!(filters.live());
        let pause = live_toggle(&filters, true);
        assert!(
            pause.contains("href=\"/sagas?state=failed&id=order%207&live=off\""),
            "{pause}"
        );
        let paused = Filters {
            live: "off".into(),
            ..filters
        };
        assert!(!paused.live());
        assert!(
            paused.query().ends_with("&live=off"),
            "kept by the next page"
        );
        let resume = live_toggle(&paused, true);
        assert!(
            resume.contains("href=\"/sagas?state=failed&id=order%207\""),
            "{resume}"
        );
        assert_eq!(
            live_toggle(&paused, false),
            "",
            "a console that never reloads"
        );
    }
}
