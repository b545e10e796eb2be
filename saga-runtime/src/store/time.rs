//! Timestamps: microseconds since the epoch, and SQLite's text form. Values are clamped to
//! years 1970..=9999 so that formatting cannot fail, whatever a row holds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 9999-12-31 23:59:59 UTC.
const MAX_SECONDS: u64 = 253_402_300_799;

fn clamp(t: SystemTime) -> SystemTime {
    let max = UNIX_EPOCH + Duration::from_secs(MAX_SECONDS);
    if t < UNIX_EPOCH {
        UNIX_EPOCH
    } else if t > max {
        max
    } else {
        t
    }
}

/// `t + d`, saturating at the largest representable time.
pub(crate) fn later(t: SystemTime, d: Duration) -> SystemTime {
    clamp(
        t.checked_add(d)
            .unwrap_or(UNIX_EPOCH + Duration::from_secs(MAX_SECONDS)),
    )
}

/// Microseconds since the epoch.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn to_micros(t: SystemTime) -> i64 {
    clamp(t)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The time `micros` after the epoch.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn from_micros(micros: i64) -> SystemTime {
    clamp(UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0)))
}

/// `2026-11-25 23:59:29.123456`: UTC, sortable as text, and comparable with SQLite's
/// `datetime('now', '-1 hour')` (the deployment guide's stuck-saga query, docs/GUIDE.md).
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) fn to_text(t: SystemTime) -> String {
    let mut text = humantime::format_rfc3339_micros(clamp(t)).to_string();
    text.pop(); // the trailing `Z`
    text.replacen('T', " ", 1)
}

/// Parses [`to_text`]'s form (and plain `YYYY-MM-DD HH:MM:SS`).
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) fn from_text(text: &str) -> Result<SystemTime, String> {
    let rfc3339 = format!("{}Z", text.trim().replacen(' ', "T", 1));
    humantime::parse_rfc3339(&rfc3339).map_err(|e| format!("bad timestamp `{text}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_clamps() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
        assert_eq!(from_text(&to_text(t)), Ok(t));
        assert_eq!(from_micros(to_micros(t)), t);
        assert_eq!(
            to_text(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01 00:00:00.000000"
        );
        assert_eq!(
            to_text(later(t, Duration::MAX)),
            "9999-12-31 23:59:59.000000"
        );
        assert!(from_text("yesterday").is_err());
        assert_eq!(
            from_text("2026-01-02 03:04:05").ok(),
            Some(UNIX_EPOCH + Duration::from_secs(1_767_323_045))
        );
    }
}
