//! `#[topic("name", ...)]`: parse the attribute, validate it and the struct, expand.

mod expand;
pub(crate) mod parse;
mod validate;

use proc_macro2::TokenStream;
use quote::quote;

use crate::errors::Errors;

/// Expands `#[topic(attr)] item`. Never fails: mistakes become `compile_error!`s next to the
/// item, which is always emitted unchanged.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let parsed_item = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(parsed) => parsed,
        // Not an item at all: rustc reports the syntax error itself.
        Err(error) => {
            let error = error.to_compile_error();
            return quote!(#item #error);
        }
    };
    let mut errors = Errors::default();
    let target = validate::item(&parsed_item, &mut errors);
    let spec = match syn::parse2::<parse::TopicAttr>(attr) {
        Ok(attr) => Some(validate::attr(attr, &mut errors)),
        Err(error) => {
            errors.push(error);
            None
        }
    };
    // Even when the attribute is unreadable, the impls keep uses of the type (handlers,
    // `.produce()`) from adding errors of their own; the compile error stops the build.
    let spec = spec.unwrap_or_else(|| validate::TopicSpec {
        name: syn::LitStr::new("invalid", proc_macro2::Span::call_site()),
        options: validate::Options::default(),
    });
    let impls = match target {
        Some(target) => expand::impls(&target, &spec),
        None => TokenStream::new(),
    };
    let errors = errors.to_compile_errors();
    quote! {
        #item
        #impls
        #errors
    }
}

#[cfg(test)]
mod tests;
