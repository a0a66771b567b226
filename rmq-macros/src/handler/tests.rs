//! Expansion tests on token streams; the compiler's view is covered by `ui-tests`.

use proc_macro2::TokenStream;
use quote::quote;

use super::expand;

fn errors(attr: TokenStream, item: TokenStream) -> Vec<String> {
    crate::errors::compile_errors(&expand(attr, item).to_string())
}

#[test]
fn registers_a_one_argument_handler() {
    let out = expand(
        quote!(),
        quote!(
            async fn charge(order: Order) {}
        ),
    )
    .to_string();
    assert!(
        out.starts_with("# [allow (clippy :: unused_async)] async fn charge (order : Order) { }"),
        "{out}"
    );
    assert!(out.contains("inventory :: submit !"), "{out}");
    assert!(out.contains("assert_topic :: < Order > ()"), "{out}");
    assert!(out.contains("\"::\" , \"charge\""), "{out}");
    assert!(
        out.contains("concurrency : :: core :: option :: Option :: None"),
        "{out}"
    );
    assert!(out.contains("| msg , _ctx | charge (msg)"), "{out}");
    assert!(!out.contains("compile_error"), "{out}");
}

#[test]
fn registers_a_two_argument_handler_with_concurrency() {
    let out = expand(
        quote!(concurrency = 4),
        quote!(
            async fn r#audit(order: Order, ctx: Context) -> anyhow::Result<()> {
                Ok(())
            }
        ),
    )
    .to_string();
    assert!(out.contains("Option :: Some (4u32)"), "{out}");
    assert!(out.contains("\"audit\""), "{out}");
    assert!(
        out.contains(
            "< Context as :: rmq_runtime :: __private :: HandlerContext > :: from_context (ctx)"
        ),
        "{out}"
    );
    assert!(
        out.contains("assert_return :: < anyhow :: Result < () > > ()"),
        "{out}"
    );
    assert!(out.contains("HandlerReturn > :: into_result"), "{out}");
    assert!(!out.contains("compile_error"), "{out}");
}

#[test]
fn rejects_bad_options() {
    for (attr, expected) in [
        (quote!(concurrency = 0), "`concurrency = 0` would never run"),
        (quote!(concurrency = -2), "cannot be negative"),
        (quote!(concurrency = 1, concurrency = 2), "given twice"),
        (quote!(concurency = 2), "did you mean `concurrency`?"),
        (quote!(4), "expected `concurrency = N`"),
    ] {
        let found = errors(
            attr.clone(),
            quote!(
                async fn f(m: M) {}
            ),
        );
        assert_eq!(found.len(), 1, "{attr}: {found:?}");
        assert!(found[0].contains(expected), "{attr}: {found:?}");
    }
}

#[test]
fn rejects_bad_signatures() {
    for (item, expected) in [
        (
            quote!(
                fn f(m: M) {}
            ),
            "must be an `async fn`",
        ),
        (
            quote!(
                async fn f() {}
            ),
            "takes the message as its first argument",
        ),
        (
            quote!(
                async fn f(a: A, b: Context, c: C) {}
            ),
            "at most two arguments",
        ),
        (
            quote!(
                async fn f(&self, m: M) {}
            ),
            "not a method",
        ),
        (
            quote!(
                async fn f<T>(m: T) {}
            ),
            "cannot be generic",
        ),
        (
            quote!(
                async fn f(m: impl Topic) {}
            ),
            "cannot take `impl Trait`",
        ),
        (
            quote!(
                async fn f(m: Vec<impl Topic>) {}
            ),
            "cannot take `impl Trait`",
        ),
        (
            quote!(
                async fn f(m: M) -> impl Sized {}
            ),
            "cannot return `impl Trait`",
        ),
        (
            quote!(
                unsafe fn f(m: M) {}
            ),
            "cannot be `unsafe`",
        ),
        (
            quote!(
                struct S;
            ),
            "goes on an `async fn`",
        ),
    ] {
        let found = errors(quote!(), item.clone());
        assert!(!found.is_empty(), "{item}");
        assert!(
            found.iter().any(|e| e.contains(expected)),
            "{item}: {found:?}"
        );
        let output = expand(quote!(), item.clone()).to_string();
        assert!(!output.contains("submit"), "{output}");
    }
}

#[test]
fn reports_option_and_signature_mistakes_together() {
    let found = errors(
        quote!(concurrency = 0),
        quote!(
            fn f(m: M) {}
        ),
    );
    assert_eq!(found.len(), 2, "{found:?}");
}
