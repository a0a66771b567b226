//! Expansion tests on token streams; the compiler's view is covered by `ui-tests`.

use proc_macro2::TokenStream;
use quote::quote;

use super::expand;

fn expanded(attr: TokenStream) -> String {
    let item = quote!(
        #[derive(Serialize, Deserialize)]
        pub struct Order {
            id: String,
        }
    );
    expand(attr, item).to_string()
}

fn errors(attr: TokenStream, item: TokenStream) -> Vec<String> {
    crate::errors::compile_errors(&expand(attr, item).to_string())
}

fn plain_struct() -> TokenStream {
    quote!(
        struct Order {
            id: String,
        }
    )
}

#[test]
fn writes_every_option() {
    let out = expanded(quote!(
        "order_created",
        priority = "high",
        retries = 5,
        retry_delays = [1, "500ms", "5m"],
        ttl = "1h",
        timeout = 30
    ));
    assert!(
        out.contains("const NAME : & 'static str = \"order_created\""),
        "{out}"
    );
    assert!(out.contains("Priority :: High"), "{out}");
    assert!(
        out.contains("retries : :: core :: option :: Option :: Some (5u32)"),
        "{out}"
    );
    assert!(out.contains("Backoff :: Delays (& [:: rmq_runtime :: __private :: Duration :: from_millis (1000u64) , :: rmq_runtime :: __private :: Duration :: from_millis (500u64) , :: rmq_runtime :: __private :: Duration :: from_millis (300000u64)])"), "{out}");
    assert!(out.contains("ttl : :: core :: option :: Option :: Some (:: rmq_runtime :: __private :: Duration :: from_millis (3600000u64))"), "{out}");
    assert!(out.contains("timeout : :: core :: option :: Option :: Some (:: rmq_runtime :: __private :: Duration :: from_millis (30000u64))"), "{out}");
    assert!(out.contains("pub fn produce (self ,)"), "{out}");
    assert!(out.contains("pub fn send (self)"), "{out}");
    assert!(out.contains("pub fn produce_batch"), "{out}");
    assert!(!out.contains("compile_error"), "{out}");
}

#[test]
fn defaults_are_none() {
    let out = expanded(quote!("plain"));
    assert!(out.contains("Priority :: Normal"), "{out}");
    assert_eq!(
        out.matches(":: core :: option :: Option :: None").count(),
        4,
        "{out}"
    );
}

#[test]
fn exponential_backoff_and_trailing_comma() {
    let out = expanded(quote!("t", backoff = "exponential",));
    assert!(out.contains("Backoff :: Exponential"), "{out}");
}

#[test]
fn keeps_visibility_of_the_struct() {
    let out = expand(quote!("t"), plain_struct()).to_string();
    assert!(
        out.contains("fn produce (self ,)") && !out.contains("pub fn"),
        "{out}"
    );
}

#[test]
fn reports_every_mistake_at_once() {
    let found = errors(
        quote!(
            "bad name",
            priority = "urgent",
            retries = -1,
            colour = 3,
            ttl = "5 parsecs",
            retries = 2
        ),
        plain_struct(),
    );
    assert_eq!(found.len(), 6, "{found:?}");
    assert!(found[0].contains("may hold only letters"), "{found:?}");
    assert!(found[1].contains("unknown priority `urgent`"), "{found:?}");
    assert!(found[2].contains("cannot be negative"), "{found:?}");
    assert!(
        found[3].contains("unknown #[topic] option `colour`"),
        "{found:?}"
    );
    assert!(found[4].contains("invalid duration for `ttl`"), "{found:?}");
    assert!(found[5].contains("`retries` is given twice"), "{found:?}");
}

#[test]
fn repeated_option() {
    let found = errors(quote!("t", retries = 1, retries = 2), plain_struct());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("`retries` is given twice"), "{found:?}");
}

#[test]
fn suggests_a_known_option() {
    let found = errors(quote!("t", retry_delay = [1]), plain_struct());
    assert!(
        found[0].contains("did you mean `retry_delays`?"),
        "{found:?}"
    );
}

#[test]
fn rejects_bad_values() {
    for (attr, expected) in [
        (quote!("t", retries = 4294967296), "too large"),
        (quote!("t", retries = "5"), "expects a whole number"),
        (quote!("t", retry_delays = []), "at least one duration"),
        (quote!("t", retry_delays = 5), "expects a list"),
        (
            quote!("t", retry_delays = [1], backoff = "exponential"),
            "cannot be used with `retry_delays`",
        ),
        (quote!("t", backoff = "linear"), "unknown backoff"),
        (quote!("t", timeout = 0), "`timeout` of zero"),
        (quote!("t", timeout = "0s"), "`timeout` of zero"),
        (quote!("t", ttl = 1.5), "expects a duration"),
        (quote!("t", priority = high), "expects a string"),
        (quote!(""), "cannot be empty"),
        (quote!(), "expected the topic name"),
        (quote!(order_created), "expected the topic name"),
    ] {
        let found = errors(attr.clone(), plain_struct());
        assert_eq!(found.len(), 1, "{attr}: {found:?}");
        assert!(found[0].contains(expected), "{attr}: {found:?}");
    }
}

#[test]
fn rejects_items_that_are_not_plain_structs() {
    for (item, expected, has_impl) in [
        (
            quote!(
                struct G<T> {
                    t: T,
                }
            ),
            "cannot be generic",
            false,
        ),
        (
            quote!(
                struct T(u32);
            ),
            "tuple structs are not supported",
            true,
        ),
        (
            quote!(
                struct U;
            ),
            "unit structs are not supported",
            true,
        ),
        (
            quote!(
                enum E {
                    A,
                }
            ),
            "enums are not supported",
            true,
        ),
        (
            quote!(
                fn f() {}
            ),
            "goes on a struct",
            false,
        ),
    ] {
        let output = expand(quote!("t"), item.clone()).to_string();
        let found = errors(quote!("t"), item.clone());
        assert_eq!(found.len(), 1, "{item}: {found:?}");
        assert!(found[0].contains(expected), "{item}: {found:?}");
        assert_eq!(output.contains("impl :: rmq_runtime"), has_impl, "{output}");
    }
}

#[test]
fn struct_is_kept_when_the_attribute_is_wrong() {
    let output = expand(quote!(retries = 5), plain_struct()).to_string();
    assert!(output.starts_with("struct Order"), "{output}");
    assert!(output.contains("compile_error"), "{output}");
    // The impl is still there, so code using the type reports nothing more.
    assert!(
        output.contains("impl :: rmq_runtime :: __private :: Topic for Order"),
        "{output}"
    );
}
