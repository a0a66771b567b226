//! `#[handler]`: parse the options, validate the function, register it with `inventory`.

mod expand;
mod parse;
mod validate;

use proc_macro2::{Span, TokenStream};
use quote::quote;

use crate::errors::Errors;

/// Expands `#[handler(attr)] item`. Never fails: the function is always emitted unchanged
/// (users may call it directly), followed by its registration when it is well-formed, or
/// by `compile_error!`s when it is not.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let options = match syn::parse2::<parse::HandlerAttr>(attr) {
        Ok(attr) => Some(validate::attr(attr, &mut errors)),
        Err(error) => {
            errors.push(error);
            None
        }
    };
    let registration = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Fn(function)) => validate::function(&function, &mut errors)
            .zip(options)
            .filter(|_| errors.is_empty())
            .map(|(handler, options)| expand::registration(&handler, &options)),
        Ok(_) => {
            errors.at(
                Span::call_site(),
                "#[handler] goes on an `async fn`, e.g. `#[handler] async fn charge(order: OrderCreated) {}`",
            );
            None
        }
        // Not an item at all: rustc reports the syntax error itself.
        Err(_) => None,
    };
    // A handler that never awaits must still be `async`: silence the lint that says otherwise.
    let allow = registration
        .is_some()
        .then(|| quote!(#[allow(clippy::unused_async)]));
    let errors = errors.to_compile_errors();
    quote! {
        #allow
        #item
        #registration
        #errors
    }
}

#[cfg(test)]
mod tests;
