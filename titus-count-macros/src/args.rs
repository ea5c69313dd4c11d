//! Parsing and validating the arguments of `#[counted(...)]`.

use syn::parse::{Parse, ParseStream};
use syn::{LitStr, Token};

/// The accepted form, quoted in every error.
pub(crate) const USAGE: &str = "expected `#[counted(\"stage\")]`";

/// The arguments of one `#[counted(...)]`.
pub(crate) struct Args {
    /// The stage name.
    pub(crate) stage: LitStr,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(input.error(format!("missing stage name: {USAGE}")));
        }
        let stage: LitStr = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("the stage name must be a string literal: {USAGE}"),
            )
        })?;
        validate_stage(&stage)?;
        if input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
        }
        if !input.is_empty() {
            return Err(input.error(format!("unexpected argument: {USAGE}")));
        }
        Ok(Args { stage })
    }
}

/// Stage names end up as Redis hash fields and in logs: non-empty, no
/// control characters.
fn validate_stage(stage: &LitStr) -> syn::Result<()> {
    let value = stage.value();
    if value.is_empty() {
        return Err(syn::Error::new_spanned(
            stage,
            format!("the stage name must not be empty: {USAGE}"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(syn::Error::new_spanned(
            stage,
            "the stage name must not contain control characters",
        ));
    }
    Ok(())
}
