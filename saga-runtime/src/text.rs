//! Text on its way to a text column, treated the same way for every store (see "Text in
//! columns" in `docs/DECISIONS.md`):
//!
//! - identifiers and labels a caller passes (saga id, `saga_type`, `user_id`, `ip_address`,
//!   runner id) are refused with a clear error, before anything is written, if they hold a
//!   NUL byte or more than [`MAX_LABEL`] bytes; every other character is stored as given;
//! - free text the runtime records (step and compensation errors, panic messages, reasons,
//!   operator names) never fails a write: NUL becomes U+FFFD, and text above [`MAX_TEXT`]
//!   bytes is cut at a character boundary, followed by `… [cut: N bytes in all]`;
//! - inputs and outputs travel inside the JSON context, where NUL and control characters
//!   are escaped (`\u0000`): they are stored losslessly.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The most bytes of free text stored in one column.
pub(crate) const MAX_TEXT: usize = 8 * 1024;

/// The most bytes of an identifier or label.
pub(crate) const MAX_LABEL: usize = 1024;

/// Free text as it is stored: without NUL, and at most [`MAX_TEXT`] bytes plus a note of
/// what was cut. Borrows when nothing changes.
pub(crate) fn clean(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_TEXT && !text.contains('\0') {
        return Cow::Borrowed(text);
    }
    let mut out = text.replace('\0', "\u{FFFD}");
    if out.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        let _ = write!(out, "… [cut: {} bytes in all]", text.len());
    }
    Cow::Owned(out)
}

/// [`clean`] for an owned string, without a copy when nothing changes.
pub(crate) fn clean_owned(text: String) -> String {
    match clean(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(cleaned) => cleaned,
    }
}

/// Checks an identifier or label: `Err` says what is wrong with it.
pub(crate) fn check_label(value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err("cannot contain a NUL byte".to_owned());
    }
    if value.len() > MAX_LABEL {
        return Err(format!(
            "is {} bytes long; at most {MAX_LABEL} are stored",
            value.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_keeps_everything_but_nul_and_length() {
        assert!(matches!(clean("plain ünïcødé \x07\t\n"), Cow::Borrowed(_)));
        assert_eq!(clean("a\0b"), "a\u{FFFD}b");
        let long = "é".repeat(MAX_TEXT); // 2 bytes each: the cut falls inside a character
        let cut = clean(&long);
        let kept = cut
            .strip_suffix(&format!("… [cut: {} bytes in all]", long.len()))
            .unwrap();
        assert_eq!(kept.len(), MAX_TEXT);
        assert!(long.starts_with(kept));
        let odd = format!("x{}", "é".repeat(MAX_TEXT));
        let kept_odd = clean(&odd).into_owned();
        assert!(kept_odd.starts_with('x'));
        assert!(
            kept_odd.find('…').unwrap() == MAX_TEXT - 1,
            "the cut backs off to a boundary"
        );
        assert_eq!(clean_owned("fine".to_owned()), "fine");
    }

    #[test]
    fn labels_refuse_nul_and_length() {
        assert!(check_label("id with 'quotes' ✓ \x07").is_ok());
        assert_eq!(
            check_label("a\0b").unwrap_err(),
            "cannot contain a NUL byte"
        );
        assert!(check_label(&"u".repeat(MAX_LABEL)).is_ok());
        assert!(check_label(&"u".repeat(MAX_LABEL + 1)).is_err());
    }
}
