//! Parsing and validating the arguments of `#[counted(...)]`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, LitStr, Token};

/// The accepted form, quoted in every error.
pub(crate) const USAGE: &str = "expected `#[counted(\"stage\")]`, optionally followed by `by = EXPR`, `outcome`, `panics` and `crate = PATH`";

/// Longest stage name accepted, in bytes: derived names such as
/// `STAGE.panic` must stay within the runtime's limit of 128.
const MAX_STAGE_LEN: usize = 120;

/// The arguments of one `#[counted(...)]`.
pub(crate) struct Args {
    /// The stage name.
    pub(crate) stage: LitStr,
    /// `by = EXPR`: the amount to count on entry instead of one.
    pub(crate) by: Option<Expr>,
    /// `outcome`: also count `STAGE.ok` or `STAGE.err` by the returned `Result`.
    pub(crate) outcome: Option<Ident>,
    /// `panics`: also count `STAGE.panic` when the body panics.
    pub(crate) panics: Option<Ident>,
    /// `crate = PATH`: where the expansion finds titus-count, for a crate
    /// that re-exports it or depends on it under another name.
    pub(crate) krate: Option<syn::Path>,
}

impl Args {
    /// The path of titus-count's support module for the expansion.
    pub(crate) fn private(&self) -> proc_macro2::TokenStream {
        self.private_at(Span::call_site())
    }

    /// Like [`private`](Self::private), spanned at `span` (where a type
    /// error in the call it starts is reported).
    pub(crate) fn private_at(&self, span: Span) -> proc_macro2::TokenStream {
        match &self.krate {
            Some(path) => quote::quote_spanned! {span=> #path::__private },
            None => quote::quote_spanned! {span=> ::titus_count::__private },
        }
    }
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                format!("missing stage name: {USAGE}"),
            ));
        }
        let stage: LitStr = if input.peek(LitStr) {
            input.parse()?
        } else {
            let found: proc_macro2::TokenTree = input.parse()?;
            return Err(syn::Error::new_spanned(
                found,
                format!("the stage name must be a string literal: {USAGE}"),
            ));
        };
        validate_stage(&stage)?;
        let mut args = Args {
            stage,
            by: None,
            outcome: None,
            panics: None,
            krate: None,
        };
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            // `crate` is a keyword, which a plain `Ident` refuses.
            let name: Ident = syn::ext::IdentExt::parse_any(input).map_err(|e| {
                syn::Error::new(e.span(), format!("expected an argument name: {USAGE}"))
            })?;
            let duplicate = |set: bool| {
                if set {
                    Err(syn::Error::new_spanned(
                        &name,
                        format!("duplicate argument `{name}`"),
                    ))
                } else {
                    Ok(())
                }
            };
            match name.to_string().as_str() {
                "by" => {
                    duplicate(args.by.is_some())?;
                    args.by = Some(value(
                        &name,
                        input,
                        "`by = EXPR`, such as `by = batch.len()`",
                    )?);
                }
                "outcome" => {
                    duplicate(args.outcome.is_some())?;
                    no_value(&name, input)?;
                    args.outcome = Some(name);
                }
                "panics" => {
                    duplicate(args.panics.is_some())?;
                    no_value(&name, input)?;
                    args.panics = Some(name);
                }
                "crate" => {
                    duplicate(args.krate.is_some())?;
                    args.krate = Some(value(
                        &name,
                        input,
                        "`crate = PATH`, such as `crate = my_facade::titus_count`",
                    )?);
                }
                _ => {
                    return Err(syn::Error::new_spanned(
                        &name,
                        format!("unknown argument `{name}`: {USAGE}"),
                    ));
                }
            }
        }
        Ok(args)
    }
}

/// The value of `name = VALUE`; `form` describes it in the error when the
/// `=` is missing.
fn value<T: Parse>(name: &Ident, input: ParseStream<'_>, form: &str) -> syn::Result<T> {
    if !input.peek(Token![=]) {
        return Err(syn::Error::new_spanned(name, format!("expected {form}")));
    }
    input.parse::<Token![=]>()?;
    input.parse()
}

/// A flag such as `outcome` takes no value: `outcome = true` is refused at
/// the `=`, naming the flag.
fn no_value(name: &Ident, input: ParseStream<'_>) -> syn::Result<()> {
    if input.peek(Token![=]) {
        let eq: Token![=] = input.parse()?;
        return Err(syn::Error::new_spanned(
            eq,
            format!("`{name}` takes no value: write `#[counted(\"stage\", {name})]`"),
        ));
    }
    Ok(())
}

/// Whether a stage name is carried safely everywhere it goes: a Redis hash
/// field, a Prometheus label value, JSON, a terminal table, a shell argument.
pub(crate) fn stage_error(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("the stage name must not be empty".to_owned());
    }
    if value.len() > MAX_STAGE_LEN {
        return Some(format!(
            "the stage name is {} bytes long; at most {MAX_STAGE_LEN} are allowed",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '/')))
    {
        return Some(format!(
            "the stage name contains {c:?}; stage names use ASCII letters, digits and `_ . - : /`"
        ));
    }
    None
}

fn validate_stage(stage: &LitStr) -> syn::Result<()> {
    match stage_error(&stage.value()) {
        Some(message) => Err(syn::Error::new_spanned(stage, message)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tokens: &str) -> syn::Result<Args> {
        syn::parse_str(tokens)
    }

    #[test]
    fn accepts_every_argument_once() {
        let args = parse(r#""emit", by = batch.len(), outcome, panics"#).unwrap();
        assert_eq!(args.stage.value(), "emit");
        assert!(args.by.is_some() && args.outcome.is_some() && args.panics.is_some());
        let args = parse(r#""emit","#).unwrap();
        assert!(args.by.is_none() && args.outcome.is_none() && args.panics.is_none());
        let args = parse(r#""emit", crate = ::facade::titus_count"#).unwrap();
        assert_eq!(
            args.private().to_string(),
            ":: facade :: titus_count :: __private"
        );
        let args = parse(r#""emit""#).unwrap();
        assert_eq!(args.private().to_string(), ":: titus_count :: __private");
    }

    #[test]
    fn rejects_misuse() {
        for (tokens, needle) in [
            ("", "missing stage name"),
            ("emit", "string literal"),
            ("42", "string literal"),
            (r#""""#, "must not be empty"),
            (r#""a b""#, "contains ' '"),
            (r#""a{b}""#, "contains '{'"),
            (r#""emit", by"#, "expected `by = EXPR`"),
            (r#""emit", by = 1, by = 2"#, "duplicate argument `by`"),
            (
                r#""emit", outcome, outcome"#,
                "duplicate argument `outcome`",
            ),
            (r#""emit", level = 3"#, "unknown argument `level`"),
            (r#""emit", outcome = true"#, "`outcome` takes no value"),
            (r#""emit", panics = false"#, "`panics` takes no value"),
            (r#""emit", panics, panics"#, "duplicate argument `panics`"),
            (r#""emit", crate"#, "expected `crate = PATH`"),
            (
                r#""emit", crate = a, crate = b"#,
                "duplicate argument `crate`",
            ),
            (r#""emit" "other""#, "expected `,`"),
        ] {
            let err = parse(tokens).err().map(|e| e.to_string());
            let err = err.unwrap_or_else(|| panic!("`{tokens}` was accepted"));
            assert!(err.contains(needle), "`{tokens}`: {err}");
        }
    }

    #[test]
    fn stage_rule() {
        assert_eq!(stage_error("orders.in/eu-west:1_a"), None);
        assert!(stage_error(&"x".repeat(120)).is_none());
        assert!(stage_error(&"x".repeat(121)).is_some());
        assert!(stage_error("é").is_some());
        assert!(stage_error("tab\there").is_some());
    }
}
