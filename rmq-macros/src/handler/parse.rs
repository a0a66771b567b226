//! Reads `#[handler]` and `#[handler(concurrency = N)]`. Unknown keys are kept so that
//! validation reports them together with the other mistakes.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, Token};

use crate::value::Value;

mod kw {
    syn::custom_keyword!(concurrency);
}

/// The attribute's options, in the order written.
pub(crate) struct HandlerAttr {
    pub(crate) options: Vec<HandlerOption>,
}

/// One `key = value`.
pub(crate) struct HandlerOption {
    pub(crate) key: Key,
    pub(crate) value: Value,
}

/// The key of an option.
pub(crate) enum Key {
    Concurrency(kw::concurrency),
    Unknown(Ident),
}

impl Key {
    /// The key as written.
    pub(crate) fn name(&self) -> String {
        match self {
            Key::Concurrency(_) => "concurrency".into(),
            Key::Unknown(ident) => ident.unraw().to_string(),
        }
    }

    /// Where the key is, for errors about it.
    pub(crate) fn span(&self) -> Span {
        match self {
            Key::Concurrency(k) => k.span,
            Key::Unknown(ident) => ident.span(),
        }
    }
}

impl Parse for HandlerAttr {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut options = Vec::new();
        while !input.is_empty() {
            options.push(input.parse()?);
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(HandlerAttr { options })
    }
}

impl Parse for HandlerOption {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key = if input.peek(kw::concurrency) {
            Key::Concurrency(input.parse()?)
        } else if input.peek(Ident::peek_any) {
            Key::Unknown(input.call(Ident::parse_any)?)
        } else {
            return Err(
                input.error("expected `concurrency = N`, e.g. `#[handler(concurrency = 4)]`")
            );
        };
        if !input.peek(Token![=]) {
            return Err(input.error(format_args!(
                "expected `=` after `{}`, e.g. `#[handler(concurrency = 4)]`",
                key.name()
            )));
        }
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        Ok(HandlerOption { key, value })
    }
}
