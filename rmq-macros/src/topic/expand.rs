//! The code `#[topic]` generates: the `Topic` impl and the producing functions. Everything
//! is named by absolute path through `::rmq_runtime`, and the functions only delegate to
//! generic runtime code.

use std::time::Duration;

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use rmq_core::Priority;

use super::validate::{Backoff, Options, Target, TopicSpec};

/// `impl Topic for S` and `impl S { produce, send, produce_batch }`.
pub(crate) fn impls(target: &Target, spec: &TopicSpec) -> TokenStream {
    let Target { ident, vis } = target;
    let name = &spec.name;
    let options = options(&spec.options);
    // The impl header carries the struct's span, so a missing `Serialize` or `Deserialize`
    // (supertraits of `Topic`) is reported at the struct.
    let topic_impl = quote_spanned! {ident.span()=>
        #[automatically_derived]
        impl ::rmq_runtime::__private::Topic for #ident
    };
    quote! {
        #topic_impl {
            const NAME: &'static str = #name;
            const OPTIONS: ::rmq_runtime::__private::TopicOptions = #options;
        }

        #[allow(dead_code)]
        impl #ident {
            /// Produces this message with the topic's options through the process-wide
            /// client (configured from the environment, or by `rmq_runtime::init`), and
            /// resolves to the new message's id.
            #vis fn produce(
                self,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<::rmq_runtime::MessageId, ::rmq_runtime::Error>,
            > + ::core::marker::Send {
                ::rmq_runtime::__private::produce(self)
            }

            /// Starts producing this message with per-message settings: `.delay(..)`,
            /// `.priority(..)`, `.id(..)` (idempotent), ...; `.await` the builder to produce.
            #vis fn send(self) -> ::rmq_runtime::SendBuilder<Self> {
                ::rmq_runtime::SendBuilder::new(self)
            }

            /// Produces every message of `items` in one round trip to Redis and resolves
            /// to their ids, in order.
            #vis fn produce_batch(
                items: impl ::core::iter::IntoIterator<Item = Self>,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<
                    ::std::vec::Vec<::rmq_runtime::MessageId>,
                    ::rmq_runtime::Error,
                >,
            > + ::core::marker::Send {
                ::rmq_runtime::__private::produce_batch(items)
            }
        }
    }
}

/// The `TopicOptions { .. }` literal.
fn options(options: &Options) -> TokenStream {
    let priority = match options.priority.unwrap_or_default() {
        Priority::High => quote!(High),
        Priority::Normal => quote!(Normal),
        Priority::Low => quote!(Low),
    };
    let retries = some_or_none(options.retries.map(|n| quote!(#n)));
    let backoff = some_or_none(options.backoff.as_ref().map(|backoff| match backoff {
        Backoff::Exponential => quote!(::rmq_runtime::__private::Backoff::Exponential),
        Backoff::Delays(delays) => {
            let delays = delays.iter().copied().map(duration);
            quote!(::rmq_runtime::__private::Backoff::Delays(&[#(#delays),*]))
        }
    }));
    let ttl = some_or_none(options.ttl.map(duration));
    let timeout = some_or_none(options.timeout.map(duration));
    quote! {
        ::rmq_runtime::__private::TopicOptions {
            priority: ::rmq_runtime::__private::Priority::#priority,
            retries: #retries,
            backoff: #backoff,
            ttl: #ttl,
            timeout: #timeout,
        }
    }
}

fn duration(duration: Duration) -> TokenStream {
    // parse_duration has millisecond resolution, so nothing is lost.
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    quote!(::rmq_runtime::__private::Duration::from_millis(#millis))
}

fn some_or_none(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    }
}
