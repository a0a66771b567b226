//! Decides whether a parsed `#[handler]` makes sense: its options and the signature of the
//! function. Type checks that only the compiler can make (is the first argument a
//! `#[topic]` type? is the second `Context`? is the return type acceptable?) are emitted
//! by `expand` as spanned assertions instead.

use syn::{FnArg, GenericArgument, Ident, ItemFn, PathArguments, ReturnType, Type};

use super::parse::{HandlerAttr, Key};
use crate::errors::{closest, Errors};

/// `#[handler(..)]` options.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Options {
    pub(crate) concurrency: Option<u32>,
}

/// What the registration needs to know about the function.
pub(crate) struct HandlerFn<'a> {
    pub(crate) ident: &'a Ident,
    /// The message type (first argument).
    pub(crate) message: &'a Type,
    /// The second argument's type, if the function takes one.
    pub(crate) context: Option<&'a Type>,
    /// The written return type; `None` for `()` by omission.
    pub(crate) output: Option<&'a Type>,
}

/// Checks the options.
pub(crate) fn attr(attr: HandlerAttr, errors: &mut Errors) -> Options {
    let mut options = Options::default();
    let mut seen = Vec::new();
    for option in attr.options {
        let key = option.key.name();
        match option.key {
            Key::Unknown(_) => {
                let hint = match closest(&key, &["concurrency"]) {
                    Some(known) => format!("; did you mean `{known}`?"),
                    None => String::new(),
                };
                errors.at(
                    option.key.span(),
                    format_args!("unknown #[handler] option `{key}`: the only option is `concurrency = N`{hint}"),
                );
            }
            Key::Concurrency(_) if seen.contains(&key) => errors.at(
                option.key.span(),
                format_args!("`{key}` is given twice; each #[handler] option may appear once"),
            ),
            Key::Concurrency(_) => {
                seen.push(key);
                match option.value.to_u32("concurrency", errors) {
                    Some(0) => errors.spanned(
                        &option.value,
                        "`concurrency = 0` would never run the handler: give at least 1, or leave it out to use the runtime's worker count",
                    ),
                    n => options.concurrency = n,
                }
            }
        }
    }
    options
}

/// Checks the signature: a free, non-generic `async fn` taking the message and optionally
/// a `Context`. Returns `None` when no registration can be generated.
pub(crate) fn function<'a>(function: &'a ItemFn, all_errors: &mut Errors) -> Option<HandlerFn<'a>> {
    let mut errors = Errors::default();
    let handler = check_function(function, &mut errors);
    let clean = errors.is_empty();
    all_errors.append(errors);
    handler.filter(|_| clean)
}

fn check_function<'a>(function: &'a ItemFn, errors: &mut Errors) -> Option<HandlerFn<'a>> {
    let sig = &function.sig;
    let name = &sig.ident;
    let mut has_receiver = false;

    if let Some(unsafety) = &sig.unsafety {
        errors.spanned(unsafety, "a #[handler] cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(abi, "a #[handler] cannot have an `extern` ABI");
    }
    if sig.asyncness.is_none() {
        errors.spanned(
            &sig.fn_token,
            format_args!("a #[handler] must be an `async fn`: write `async fn {name}(..)`"),
        );
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            "a #[handler] cannot be generic: the runtime calls it with one message type; name the #[topic] type and `Context` directly",
        );
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.spanned(where_clause, "a #[handler] cannot have a `where` clause");
    }

    let mut typed = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => {
                has_receiver = true;
                errors.spanned(
                    receiver,
                    "a #[handler] is a free `async fn`, not a method: remove `self` and put the handler outside the `impl` block",
                );
            }
            FnArg::Typed(arg) => {
                if let Some(impl_trait) = find_impl_trait(&arg.ty) {
                    errors.spanned(
                        impl_trait,
                        "a #[handler] cannot take `impl Trait`: it would be generic; name the #[topic] type (or `Context`) directly",
                    );
                }
                typed.push(arg);
            }
        }
    }
    if typed.is_empty() && !has_receiver {
        errors.at(
            sig.paren_token.span.join(),
            format_args!("a #[handler] takes the message as its first argument: `async fn {name}(msg: MyTopic)` or `async fn {name}(msg: MyTopic, ctx: Context)`"),
        );
    }
    if typed.len() > 2 {
        let extra = &typed[2..];
        errors.spanned(
            quote::quote!(#(#extra)*),
            "a #[handler] takes at most two arguments: the message and a `Context`",
        );
    }

    let output = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) => {
            if let Some(impl_trait) = find_impl_trait(ty) {
                errors.spanned(
                    impl_trait,
                    "a #[handler] cannot return `impl Trait`: return `()` or `Result<(), E>`",
                );
            }
            Some(&**ty)
        }
    };

    let message = &typed.first()?.ty;
    Some(HandlerFn {
        ident: name,
        message,
        context: typed.get(1).map(|arg| &*arg.ty),
        output,
    })
}

/// The first `impl Trait` inside `ty`, looking through references, tuples, arrays and
/// generic arguments.
fn find_impl_trait(ty: &Type) -> Option<&Type> {
    match ty {
        Type::ImplTrait(_) => Some(ty),
        Type::Reference(r) => find_impl_trait(&r.elem),
        Type::Paren(p) => find_impl_trait(&p.elem),
        Type::Group(g) => find_impl_trait(&g.elem),
        Type::Slice(s) => find_impl_trait(&s.elem),
        Type::Array(a) => find_impl_trait(&a.elem),
        Type::Ptr(p) => find_impl_trait(&p.elem),
        Type::Tuple(t) => t.elems.iter().find_map(find_impl_trait),
        Type::Path(p) => p
            .path
            .segments
            .iter()
            .find_map(|segment| match &segment.arguments {
                PathArguments::AngleBracketed(args) => args.args.iter().find_map(|arg| match arg {
                    GenericArgument::Type(ty) => find_impl_trait(ty),
                    _ => None,
                }),
                _ => None,
            }),
        _ => None,
    }
}
