//! The registration `#[handler]` generates: one `inventory::submit!` of a
//! `HandlerRegistration` whose `invoke` is a non-capturing closure (so it coerces to the
//! `fn` pointer a static needs) around the generic `__private::invoke`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;

use super::validate::{HandlerFn, Options};

/// `inventory::submit! { HandlerRegistration { .. } }`, preceded by the type checks.
pub(crate) fn registration(handler: &HandlerFn, options: &Options) -> TokenStream {
    let HandlerFn {
        ident,
        message,
        context,
        output,
    } = handler;
    // Each check carries the span of the type it checks, so a failed bound is reported at
    // that type with the runtime trait's `on_unimplemented` message.
    let topic_check = quote_spanned! {message.span()=>
        ::rmq_runtime::__private::assert_topic::<#message>();
    };
    let return_check = output.map(|ty| {
        quote_spanned! {ty.span()=>
            ::rmq_runtime::__private::assert_return::<#ty>();
        }
    });
    // `<T as Topic>::NAME` would re-check `Topic`'s supertraits here and repeat a missing
    // `Deserialize` already reported at the struct; a generic `const fn` only needs `T: Topic`.
    let topic = quote_spanned! {message.span()=>
        __rmq_topic::<#message>()
    };
    // At the function's name: a handler future that is not `Send` is reported there.
    let invoke = quote_spanned! {ident.span()=>
        ::rmq_runtime::__private::invoke::<#message, _, _>
    };
    // The second argument and the result go through traits, by qualified paths carrying the
    // user's type: a wrong type fails a bound at that type (with the trait's
    // `on_unimplemented` message) instead of a "mismatched types" error inside the closure.
    // For the result it is the bound `assert_return` checks, at the same span, so rustc
    // reports it once.
    let args = match context {
        Some(ty) => {
            let context = quote_spanned! {ty.span()=>
                <#ty as ::rmq_runtime::__private::HandlerContext>::from_context(ctx)
            };
            quote!(msg, #context)
        }
        None => quote!(msg),
    };
    let ctx = match context {
        Some(_) => quote!(ctx),
        None => quote!(_ctx),
    };
    let body = match output {
        Some(ty) => {
            let into_result = quote_spanned! {ty.span()=>
                <#ty as ::rmq_runtime::__private::HandlerReturn>::into_result
            };
            quote!(async move { #into_result(#ident(#args).await) })
        }
        None => quote!(#ident(#args)),
    };
    let name = ident.unraw().to_string();
    let concurrency = match options.concurrency {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    quote! {
        ::rmq_runtime::__private::inventory::submit! {
            {
                #topic_check
                #return_check
                const fn __rmq_topic<T: ::rmq_runtime::__private::Topic>() -> (
                    &'static str,
                    ::rmq_runtime::__private::TopicOptions,
                ) {
                    (T::NAME, T::OPTIONS)
                }
                let (topic, options) = #topic;
                ::rmq_runtime::__private::HandlerRegistration {
                    topic,
                    options,
                    name: ::core::concat!(::core::module_path!(), "::", #name),
                    file: ::core::file!(),
                    line: ::core::line!(),
                    concurrency: #concurrency,
                    invoke: |delivery| #invoke(delivery, |msg, #ctx| #body),
                }
            }
        }
    }
}
