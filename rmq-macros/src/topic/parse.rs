//! Reads `#[topic("name", key = value, ...)]`, in the style of tracing-attributes: the
//! leading name literal, then options whose keys are `custom_keyword!`s. Unknown keys are
//! kept (not rejected here) so validation can report them with every other mistake.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, LitStr, Token};

use crate::value::Value;

mod kw {
    syn::custom_keyword!(priority);
    syn::custom_keyword!(retries);
    syn::custom_keyword!(retry_delays);
    syn::custom_keyword!(backoff);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(timeout);
}

/// Every option `#[topic]` knows, in the order the docs list them.
pub(crate) const KNOWN: &[&str] = &[
    "priority",
    "retries",
    "retry_delays",
    "backoff",
    "ttl",
    "timeout",
];

/// The whole attribute.
pub(crate) struct TopicAttr {
    /// The topic name as written (validated later, so the error points at this literal).
    pub(crate) name: LitStr,
    /// The options in the order written.
    pub(crate) options: Vec<TopicOption>,
}

/// One `key = value`.
pub(crate) struct TopicOption {
    pub(crate) key: Key,
    pub(crate) value: Value,
}

/// The key of an option.
pub(crate) enum Key {
    Priority(kw::priority),
    Retries(kw::retries),
    RetryDelays(kw::retry_delays),
    Backoff(kw::backoff),
    Ttl(kw::ttl),
    Timeout(kw::timeout),
    Unknown(Ident),
}

impl Key {
    /// The key as written.
    pub(crate) fn name(&self) -> String {
        match self {
            Key::Priority(_) => "priority".into(),
            Key::Retries(_) => "retries".into(),
            Key::RetryDelays(_) => "retry_delays".into(),
            Key::Backoff(_) => "backoff".into(),
            Key::Ttl(_) => "ttl".into(),
            Key::Timeout(_) => "timeout".into(),
            Key::Unknown(ident) => ident.unraw().to_string(),
        }
    }

    /// Where the key is, for errors about it.
    pub(crate) fn span(&self) -> Span {
        match self {
            Key::Priority(k) => k.span,
            Key::Retries(k) => k.span,
            Key::RetryDelays(k) => k.span,
            Key::Backoff(k) => k.span,
            Key::Ttl(k) => k.span,
            Key::Timeout(k) => k.span,
            Key::Unknown(ident) => ident.span(),
        }
    }
}

const EXPECTED_NAME: &str =
    "expected the topic name as a string literal, e.g. `#[topic(\"order_created\")]`";

impl Parse for TopicAttr {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(syn::Error::new(Span::call_site(), EXPECTED_NAME));
        }
        if !input.peek(LitStr) {
            return Err(input.error(EXPECTED_NAME));
        }
        let name = input.parse()?;
        let mut options = Vec::new();
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break; // trailing comma
            }
            options.push(input.parse()?);
        }
        Ok(TopicAttr { name, options })
    }
}

impl Parse for TopicOption {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let lookahead = input.lookahead1();
        let key = if lookahead.peek(kw::priority) {
            Key::Priority(input.parse()?)
        } else if lookahead.peek(kw::retries) {
            Key::Retries(input.parse()?)
        } else if lookahead.peek(kw::retry_delays) {
            Key::RetryDelays(input.parse()?)
        } else if lookahead.peek(kw::backoff) {
            Key::Backoff(input.parse()?)
        } else if lookahead.peek(kw::ttl) {
            Key::Ttl(input.parse()?)
        } else if lookahead.peek(kw::timeout) {
            Key::Timeout(input.parse()?)
        } else if input.peek(Ident::peek_any) {
            Key::Unknown(input.call(Ident::parse_any)?)
        } else {
            return Err(lookahead.error());
        };
        if !input.peek(Token![=]) {
            return Err(input.error(format_args!(
                "expected `=` after `{}`, e.g. `retries = 5`",
                key.name()
            )));
        }
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        Ok(TopicOption { key, value })
    }
}
