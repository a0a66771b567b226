//! Collects every mistake found in one attribute so they are reported together, the way
//! serde_derive's `Ctxt` does: fixing one error should never reveal another that was there
//! all along.

use std::fmt::Display;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;

/// The errors found so far, combined into one `syn::Error`.
#[derive(Default)]
pub(crate) struct Errors {
    combined: Option<syn::Error>,
}

impl Errors {
    /// Records an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.combined {
            Some(combined) => combined.combine(error),
            None => self.combined = Some(error),
        }
    }

    /// Records an error pointing at `tokens` (from their first to their last token).
    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records an error pointing at `span`.
    pub(crate) fn at(&mut self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Records every error of `other`.
    pub(crate) fn append(&mut self, other: Errors) {
        if let Some(error) = other.combined {
            self.push(error);
        }
    }

    /// True when nothing was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.combined.is_none()
    }

    /// One `compile_error!` per recorded error; empty when there is none.
    pub(crate) fn to_compile_errors(&self) -> TokenStream {
        self.combined
            .as_ref()
            .map(syn::Error::to_compile_error)
            .unwrap_or_default()
    }
}

/// The known name closest to `unknown`, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|name| (edit_distance(unknown, name), *name))
        .filter(|(distance, name)| *distance <= 2.max(name.len() / 2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The messages of every `compile_error!` in a macro's output, for the expansion tests.
#[cfg(test)]
pub(crate) fn compile_errors(output: &str) -> Vec<String> {
    output
        .match_indices("compile_error !")
        .map(|(at, _)| {
            let rest = &output[at..];
            let start = rest.find('"').unwrap_or(0);
            let end = rest[start + 1..].find("\" }").unwrap_or(0);
            rest[start + 1..start + 1 + end].to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let known = crate::topic::parse::KNOWN;
        assert_eq!(closest("priorty", known), Some("priority"));
        assert_eq!(closest("retry", known), Some("retries"));
        assert_eq!(closest("retry_delay", known), Some("retry_delays"));
        assert_eq!(closest("colour", known), None);
    }
}
