//! Decides whether a parsed `#[topic]` makes sense: the name, each option's value, the
//! combinations, and the item the attribute sits on. Every mistake is recorded in
//! [`Errors`]; what could be understood is still returned so expansion can emit a stub.

use std::collections::BTreeSet;
use std::time::Duration;

use proc_macro2::Span;
use rmq_core::Priority;
use syn::{Fields, Ident, Item, LitStr, Visibility};

use super::parse::{Key, TopicAttr, KNOWN};
use crate::errors::{closest, Errors};
use crate::value::Value;

/// Options as they will be written into `Topic::OPTIONS`; `None` means "runtime default".
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Options {
    pub(crate) priority: Option<Priority>,
    pub(crate) retries: Option<u32>,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
}

/// `retry_delays = [..]` or `backoff = "exponential"`.
#[derive(Debug, PartialEq)]
pub(crate) enum Backoff {
    Delays(Vec<Duration>),
    Exponential,
}

/// The checked attribute.
pub(crate) struct TopicSpec {
    pub(crate) name: LitStr,
    pub(crate) options: Options,
}

/// The type that gets the `Topic` impl.
pub(crate) struct Target<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) vis: &'a Visibility,
}

/// Checks the name and every option.
pub(crate) fn attr(attr: TopicAttr, errors: &mut Errors) -> TopicSpec {
    if let Err(message) = rmq_core::topic::validate_topic_name(&attr.name.value()) {
        errors.spanned(&attr.name, message);
    }

    let mut options = Options::default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    // `retry_delays` or `backoff`, whichever came first, to reject the other.
    let mut backoff_key: Option<String> = None;

    for option in attr.options {
        let key = option.key.name();
        if let Key::Unknown(_) = option.key {
            let hint = match closest(&key, KNOWN) {
                Some(known) => format!("; did you mean `{known}`?"),
                None => String::new(),
            };
            errors.at(
                option.key.span(),
                format_args!(
                    "unknown #[topic] option `{key}`: expected `priority`, `retries`, `retry_delays`, `backoff`, `ttl` or `timeout`{hint}"
                ),
            );
            continue;
        }
        if !seen.insert(key.clone()) {
            errors.at(
                option.key.span(),
                format_args!("`{key}` is given twice; each #[topic] option may appear once"),
            );
            continue;
        }
        let value = &option.value;
        match option.key {
            Key::Priority(_) => options.priority = priority(value, errors),
            Key::Retries(_) => options.retries = value.to_u32("retries", errors),
            Key::RetryDelays(_) | Key::Backoff(_) => {
                if let Some(first) = &backoff_key {
                    errors.at(
                        option.key.span(),
                        format_args!(
                            "`{key}` cannot be used with `{first}`: `retry_delays = [..]` lists the waits, `backoff = \"exponential\"` computes them; keep one"
                        ),
                    );
                    continue;
                }
                backoff_key = Some(key);
                options.backoff = match option.key {
                    Key::Backoff(_) => backoff(value, errors),
                    _ => retry_delays(value, errors),
                };
            }
            Key::Ttl(_) => {
                options.ttl = value.to_duration("ttl", errors);
                if options.ttl == Some(Duration::ZERO) {
                    errors.spanned(value, "a `ttl` of zero would expire every message before its first delivery; leave `ttl` out to use the runtime default (24h)");
                    options.ttl = None;
                }
            }
            Key::Timeout(_) => {
                options.timeout = value.to_duration("timeout", errors);
                if options.timeout == Some(Duration::ZERO) {
                    errors.spanned(value, "a `timeout` of zero would fail every attempt; leave `timeout` out to use the runtime default (180s)");
                    options.timeout = None;
                }
            }
            Key::Unknown(_) => {}
        }
    }

    TopicSpec {
        name: attr.name,
        options,
    }
}

fn priority(value: &Value, errors: &mut Errors) -> Option<Priority> {
    match value {
        Value::Str(lit) => match lit.value().parse() {
            Ok(priority) => return Some(priority),
            Err(message) => errors.spanned(lit, message),
        },
        _ => errors.spanned(
            value,
            "`priority` expects a string: \"high\", \"normal\" or \"low\"",
        ),
    }
    None
}

fn backoff(value: &Value, errors: &mut Errors) -> Option<Backoff> {
    match value {
        Value::Str(lit) if lit.value() == "exponential" => return Some(Backoff::Exponential),
        Value::Str(lit) => errors.spanned(
            lit,
            format_args!(
                "unknown backoff {:?}: the only one is \"exponential\"; to choose each wait, write `retry_delays = [1, 5, \"30s\"]` instead",
                lit.value()
            ),
        ),
        _ => errors.spanned(value, "`backoff` expects the string \"exponential\""),
    }
    None
}

fn retry_delays(value: &Value, errors: &mut Errors) -> Option<Backoff> {
    let Value::List { bracket, items } = value else {
        errors.spanned(
            value,
            "`retry_delays` expects a list of durations, e.g. `retry_delays = [1, 5, \"30s\"]`",
        );
        return None;
    };
    if items.is_empty() {
        errors.at(
            bracket.span.join(),
            "`retry_delays` needs at least one duration, e.g. `retry_delays = [1, 5, \"30s\"]`; leave it out to use the runtime default (60s, 300s, 1800s)",
        );
        return None;
    }
    let delays: Vec<Option<Duration>> = items
        .iter()
        .map(|item| item.to_duration("retry_delays", errors))
        .collect();
    delays
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .map(Backoff::Delays)
}

const STRUCT_ONLY: &str =
    "#[topic] goes on a struct with named fields, e.g. `struct OrderCreated { order_id: String }`";

/// Checks the item and returns what the `Topic` impl needs, when an impl can be written at
/// all (a struct or enum without generics). Even when the item is rejected, the impl is
/// still emitted where possible so that handlers and producers using the type do not
/// report a second, misleading error.
pub(crate) fn item<'a>(item: &'a Item, errors: &mut Errors) -> Option<Target<'a>> {
    match item {
        Item::Struct(s) => {
            let generic = !s.generics.params.is_empty() || s.generics.where_clause.is_some();
            if generic {
                errors.spanned(
                    &s.generics,
                    "a #[topic] struct cannot be generic: one topic has one name and one payload type; declare a struct per topic",
                );
            }
            match &s.fields {
                Fields::Named(_) => {}
                Fields::Unnamed(fields) => errors.spanned(
                    fields,
                    format_args!(
                        "a #[topic] struct needs named fields: tuple structs are not supported; write `struct {} {{ name: Type, .. }}`",
                        s.ident
                    ),
                ),
                Fields::Unit => errors.spanned(
                    &s.ident,
                    format_args!(
                        "a #[topic] struct needs named fields: unit structs are not supported; write `struct {} {{}}` for a message without data",
                        s.ident
                    ),
                ),
            }
            (!generic).then_some(Target {
                ident: &s.ident,
                vis: &s.vis,
            })
        }
        Item::Enum(e) => {
            errors.spanned(
                &e.enum_token,
                format_args!(
                    "{STRUCT_ONLY}; enums are not supported: wrap the enum in a field of a struct"
                ),
            );
            let generic = !e.generics.params.is_empty() || e.generics.where_clause.is_some();
            (!generic).then_some(Target {
                ident: &e.ident,
                vis: &e.vis,
            })
        }
        Item::Union(u) => {
            errors.spanned(
                &u.union_token,
                format_args!("{STRUCT_ONLY}; unions are not supported"),
            );
            None
        }
        _ => {
            errors.at(Span::call_site(), STRUCT_ONLY);
            None
        }
    }
}
