//! Error accumulation: every mistake in a saga is reported in one compilation, each at the
//! narrowest token that explains it (serde's `Ctxt`, darling's `Accumulator`).

use std::fmt::Display;

use proc_macro2::Span;
use quote::ToTokens;

/// Collects `syn::Error`s and folds them into one with [`syn::Error::combine`].
///
/// Dropping it without calling [`Errors::finish`] is a bug in the macro (never in the user's
/// code), caught by a debug assertion.
#[must_use = "call `finish` to report the collected errors"]
pub(crate) struct Errors {
    errors: Option<syn::Error>,
    finished: bool,
}

impl Errors {
    pub(crate) fn new() -> Self {
        Errors {
            errors: None,
            finished: false,
        }
    }

    /// Records an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.errors {
            Some(errors) => errors.combine(error),
            None => self.errors = Some(error),
        }
    }

    /// Records an error spanning `tokens`.
    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records an error at `span`.
    pub(crate) fn at(&mut self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Whether no error has been recorded so far.
    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_none()
    }

    /// Ends collection: `Err` with every recorded error, or `Ok` if there were none.
    pub(crate) fn finish(mut self) -> syn::Result<()> {
        self.finished = true;
        match self.errors.take() {
            Some(errors) => Err(errors),
            None => Ok(()),
        }
    }
}

impl Drop for Errors {
    fn drop(&mut self) {
        debug_assert!(
            self.finished || std::thread::panicking(),
            "diag::Errors dropped without `finish`: a macro bug"
        );
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|&(distance, _)| distance <= limit)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// A suffix for an error message: ``"; did you mean `x`?"`` or nothing.
pub(crate) fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match did_you_mean(word, candidates) {
        Some(candidate) => format!("; did you mean `{candidate}`?"),
        None => String::new(),
    }
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["timeout", "retries", "compensate"];
        assert_eq!(did_you_mean("timout", keys), Some("timeout"));
        assert_eq!(did_you_mean("retires", keys), Some("retries"));
        assert_eq!(did_you_mean("compensation", keys), Some("compensate"));
        assert_eq!(did_you_mean("pivot", keys), None);
        assert_eq!(did_you_mean("x", keys), None);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
