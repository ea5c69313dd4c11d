//! Code generation for `#[counted]`.
//!
//! The count is a prefix: the expansion emits the count statement, then the
//! original statements of the body, so `return`, `?`, `self`, `async` and
//! spans keep their meaning and nothing is wrapped in a closure.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{AttrStyle, ItemFn};

use crate::args::{Args, USAGE};

pub(crate) fn expand(args: Args, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(e) => {
            let message =
                format!("`#[counted]` applies to functions and methods with a body: {USAGE}");
            return error_with_item(syn::Error::new(e.span(), message), item);
        }
    };
    if let Some(constness) = &function.sig.constness {
        let e = syn::Error::new_spanned(
            constness,
            "`#[counted]` cannot count a `const fn`: counting happens at run time",
        );
        return error_with_item(e, item);
    }
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let (inner, outer): (Vec<_>, Vec<_>) = attrs
        .into_iter()
        .partition(|a| matches!(a.style, AttrStyle::Inner(_)));
    let stage = &args.stage;
    // The count's items live inside the block `count!` expands to, so the
    // body's statements can follow it directly without a wrapping block.
    let stmts = &block.stmts;
    quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            ::titus_count::__private::count!(#stage);
            #(#stmts)*
        }
    }
}

/// Emits the error and the item unchanged, so the caller sees one error
/// rather than one for every use of the function.
fn error_with_item(error: syn::Error, item: TokenStream) -> TokenStream {
    let error = error.into_compile_error();
    quote! { #error #item }
}
