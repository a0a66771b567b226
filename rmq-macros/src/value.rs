//! The right-hand side of `key = value` in both attributes.
//!
//! Values are read without judging them: parsing only checks the shape of the attribute,
//! and `validate` decides what each key accepts, so that every wrong value is reported in
//! one pass instead of stopping at the first.

use std::time::Duration;

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{bracketed, token, LitInt, LitStr, Token};

use crate::errors::Errors;

/// A value as written.
pub(crate) enum Value {
    /// `"30s"`, `"high"`.
    Str(LitStr),
    /// `5`, `-1` (kept so the error can say "cannot be negative").
    Int {
        minus: Option<Token![-]>,
        lit: LitInt,
    },
    /// `[1, 5, "30s"]`.
    List {
        bracket: token::Bracket,
        items: Punctuated<Value, Token![,]>,
    },
    /// Anything else (`high`, `1.5`, `true`, ...), kept whole for the error message.
    Other(TokenStream),
}

impl Parse for Value {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(LitStr) {
            return Ok(Value::Str(input.parse()?));
        }
        // Before `LitInt`: syn also reads `-1` as one literal, but spanned on the `-` only.
        if input.peek(Token![-]) && input.peek2(LitInt) {
            return Ok(Value::Int {
                minus: Some(input.parse()?),
                lit: input.parse()?,
            });
        }
        if input.peek(LitInt) {
            return Ok(Value::Int {
                minus: None,
                lit: input.parse()?,
            });
        }
        if input.peek(token::Bracket) {
            let content;
            let bracket = bracketed!(content in input);
            let items = Punctuated::parse_terminated(&content)?;
            return Ok(Value::List { bracket, items });
        }
        // Take everything up to the next top-level comma so that one odd value does not
        // stop the other options from being checked.
        let mut other = TokenStream::new();
        while !input.is_empty() && !input.peek(Token![,]) {
            other.extend([input.parse::<proc_macro2::TokenTree>()?]);
        }
        if other.is_empty() {
            return Err(input.error("expected a value after `=`"));
        }
        Ok(Value::Other(other))
    }
}

impl ToTokens for Value {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        match self {
            Value::Str(lit) => lit.to_tokens(tokens),
            Value::Int { minus, lit } => {
                minus.to_tokens(tokens);
                lit.to_tokens(tokens);
            }
            Value::List { bracket, items } => bracket.surround(tokens, |t| items.to_tokens(t)),
            Value::Other(other) => other.to_tokens(tokens),
        }
    }
}

const INTEGER_SUFFIXES: &[&str] = &[
    "", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
];

impl Value {
    /// `-1` arrives as `-` and `1` from source code, but as one literal from some macros.
    fn is_negative(&self) -> bool {
        match self {
            Value::Int { minus, lit } => minus.is_some() || lit.base10_digits().starts_with('-'),
            _ => false,
        }
    }

    /// A non-negative integer that fits in a `u32`, for `retries` and `concurrency`.
    pub(crate) fn to_u32(&self, key: &str, errors: &mut Errors) -> Option<u32> {
        match self {
            Value::Int { .. } if self.is_negative() => {
                errors.spanned(self, format_args!("`{key}` cannot be negative"))
            }
            Value::Int { minus: None, lit } if !INTEGER_SUFFIXES.contains(&lit.suffix()) => errors
                .spanned(
                    lit,
                    format_args!(
                        "`{key}` expects a whole number without a suffix, e.g. `{key} = 5`"
                    ),
                ),
            Value::Int { minus: None, lit } => match lit.base10_parse::<u32>() {
                Ok(n) => return Some(n),
                Err(_) => errors.spanned(
                    lit,
                    format_args!(
                        "`{key} = {}` is too large: `{key}` is a u32 (at most {})",
                        lit.base10_digits(),
                        u32::MAX
                    ),
                ),
            },
            _ => errors.spanned(
                self,
                format_args!("`{key}` expects a whole number, e.g. `{key} = 5`"),
            ),
        }
        None
    }

    /// A duration: an integer of seconds (`30`) or a string read by
    /// `rmq_core::duration::parse_duration` (`"500ms"`, `"5m"`, `"1h"`), the same syntax as the
    /// `MQ_*` environment variables.
    pub(crate) fn to_duration(&self, key: &str, errors: &mut Errors) -> Option<Duration> {
        match self {
            Value::Int { .. } if self.is_negative() => {
                errors.spanned(self, format_args!("`{key}` cannot be negative"))
            }
            Value::Int { minus: None, lit } if !INTEGER_SUFFIXES.contains(&lit.suffix()) => errors.spanned(
                lit,
                format_args!("`{key}` takes whole seconds without a suffix (`30`) or a string with a unit (\"500ms\", \"30s\", \"5m\", \"1h\")"),
            ),
            Value::Int { minus: None, lit } => {
                match lit.base10_parse::<u64>().ok().and_then(|secs| secs.checked_mul(1000)) {
                    Some(millis) => return Some(Duration::from_millis(millis)),
                    None => errors.spanned(lit, format_args!("`{}` seconds is too large for `{key}`", lit.base10_digits())),
                }
            }
            Value::Str(lit) => match rmq_core::duration::parse_duration(&lit.value()) {
                Ok(duration) => return Some(duration),
                Err(message) => errors.spanned(lit, format_args!("invalid duration for `{key}`: {message}")),
            },
            _ => errors.spanned(
                self,
                format_args!("`{key}` expects a duration: whole seconds (`30`) or a string with a unit (\"500ms\", \"30s\", \"5m\", \"1h\")"),
            ),
        }
        None
    }
}
