//! The console's HTML: escaping (every piece of stored text goes through [`esc`]), the page
//! layout with its embedded style sheet, and formatting of times and states.

use std::time::{Duration, SystemTime};

use saga_runtime::SagaState;

/// `text` as HTML text or attribute value: `&`, `<`, `>`, `"` and `'` escaped, NUL and
/// other control characters (but tab and newline) shown as U+FFFD.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Bytes a URL component keeps as they are: RFC 3986's unreserved characters.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` as one component of a URL (path segment or query value).
pub(super) fn url(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, COMPONENT).to_string()
}

/// A time as `2026-11-28 18:10:02.123Z`.
pub(super) fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t)
        .to_string()
        .replacen('T', " ", 1)
}

/// A duration as `1.25 s` or `340 ms`.
pub(super) fn span(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// A state as a coloured badge.
pub(super) fn badge(state: SagaState) -> String {
    format!("<span class=\"badge {s}\">{s}</span>", s = state.as_str())
}

/// A whole page: `title` (escaped here), `body` (already HTML), and a refresh every
/// `refresh` seconds (the same URL, so filters are kept).
pub(super) fn page(
    title: &str,
    body: &str,
    refresh: Option<u32>,
    signed_in: Option<&str>,
) -> String {
    let refresh = refresh
        .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
        .unwrap_or_default();
    let who = match signed_in {
        Some(user) => format!(
            "<form method=\"post\" action=\"/logout\" class=\"who\">signed in as <b>{}</b> \
             <button type=\"submit\">sign out</button></form>",
            esc(user)
        ),
        None => "<a class=\"who\" href=\"/login\">sign in</a>".to_owned(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}\
         <title>{} · saga console</title><style>{STYLE}</style></head><body>\
         <nav><a class=\"brand\" href=\"/sagas\">saga console</a><a href=\"/sagas\">Sagas</a>\
         <a href=\"/stats\">Stats</a>{who}</nav><main>{body}</main></body></html>",
        esc(title)
    )
}

/// The style sheet, embedded in every page (no asset to serve, no build step).
const STYLE: &str = "\
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
nav{display:flex;gap:18px;align-items:center;padding:10px 20px;background:#1d2330}\
nav a{color:#cfd6e4;text-decoration:none}nav a.brand{color:#fff;font-weight:600}\
nav .who{margin-left:auto;color:#cfd6e4}nav .who button{margin-left:6px}\
main{padding:16px 20px;max-width:1280px}h1{font-size:20px;margin:4px 0 12px}\
h2{font-size:16px;margin:20px 0 8px}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e3e6eb;vertical-align:top}\
th{background:#eef0f4;font-weight:600}td{overflow-wrap:anywhere;max-width:520px}\
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;background:#dde2ea;white-space:nowrap}td.t{white-space:nowrap}\
.running{background:#cfe3ff}.waiting{background:#e7dcff}.compensating{background:#ffe6bf}\
.completed{background:#cdf0d6}.failed{background:#ffd3d3}.compensation_failed{background:#ff9e9e}\
.parked{background:#ffc7e6}.counts a{margin-right:14px;text-decoration:none;color:inherit}\
form.filters{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin:10px 0}\
form.filters label{display:flex;flex-direction:column;font-size:12px;color:#555}\
pre{background:#fff;border:1px solid #e3e6eb;padding:10px;overflow:auto;max-height:420px;\
white-space:pre-wrap;overflow-wrap:anywhere}dl{display:grid;grid-template-columns:max-content 1fr;\
gap:4px 14px;background:#fff;padding:10px;border:1px solid #e3e6eb}dt{color:#555}dd{margin:0;\
overflow-wrap:anywhere}.actions form{display:inline-flex;gap:6px;margin:0 12px 8px 0}\
.note{color:#555}.error{color:#a30000}.flash{background:#fff6d6;border:1px solid #e8d48a;\
padding:8px;margin-bottom:10px}svg text{font-size:11px;fill:#333}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_markup_character_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\" title='y'>&</a>\0\u{7}ü"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;\u{FFFD}\u{FFFD}ü"
        );
        assert_eq!(url("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
    }
}
