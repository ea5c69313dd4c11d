//! Code generation for `#[counted]`.
//!
//! Counting on entry is a prefix: the expansion emits the count statement,
//! then the original statements of the body, so `return`, `?`, `self`,
//! `async` and spans keep their meaning and nothing is wrapped. Only
//! `outcome` needs the function's result, and only it wraps the body: in a
//! closure for a sync function, in an inner `async` block for an async one.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{AttrStyle, Expr, ExprAsync, Ident, ItemFn, LitStr, ReturnType, Stmt, Type};

use crate::args::{Args, USAGE};

pub(crate) fn expand(args: Args, item: TokenStream) -> TokenStream {
    match try_expand(&args, item.clone()) {
        Ok(tokens) => tokens,
        // Emit the item unchanged next to the error, so the caller sees this
        // one error rather than one for every use of the function; tokens
        // that are no item at all (a closure) are dropped.
        Err(error) => {
            let error = error.into_compile_error();
            if is_item(&item) {
                quote! { #error #item }
            } else {
                error
            }
        }
    }
}

fn try_expand(args: &Args, item: TokenStream) -> syn::Result<TokenStream> {
    let function: ItemFn = syn::parse2(item).map_err(|e| {
        let message = if e.to_string().contains("expected curly braces") {
            format!("`#[counted]` needs a function with a body: {USAGE}")
        } else {
            format!("`#[counted]` applies to functions and methods: {USAGE}")
        };
        syn::Error::new(e.span(), message)
    })?;
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    if let Some(constness) = &sig.constness {
        return Err(syn::Error::new_spanned(
            constness,
            "`#[counted]` cannot count a `const fn`: counting happens at run time",
        ));
    }
    if let (Some(outcome), ReturnType::Default) = (&args.outcome, &sig.output) {
        return Err(syn::Error::new_spanned(
            outcome,
            format!(
                "`outcome` counts the `Result` a function returns, and `{}` returns nothing",
                sig.ident
            ),
        ));
    }
    let (inner_attrs, outer_attrs): (Vec<_>, Vec<_>) = attrs
        .into_iter()
        .partition(|a| matches!(a.style, AttrStyle::Inner(_)));

    let stage = &args.stage;
    let entry = match &args.by {
        // Spanned at the user's expression, so a wrong type is reported there.
        Some(by) => quote_spanned! {by.span()=>
            ::titus_count::__private::count!(#stage, ::titus_count::__private::Count::count(#by));
        },
        None => quote! { ::titus_count::__private::count!(#stage); },
    };

    let return_type = match &sig.output {
        ReturnType::Type(_, ty) => Some(&**ty),
        ReturnType::Default => None,
    };
    let mut stmts = block.stmts;
    let wraps = args.outcome.is_some() || args.panics.is_some();
    let body = if !wraps {
        quote! { #(#stmts)* }
    } else if sig.asyncness.is_some() {
        instrument(args, &stmts, Body::AsyncFn(return_type))
    } else if let Some(future) = tail_async_block(&mut stmts) {
        // A sync function returning a future (as `#[async_trait]` writes
        // them): count on call, watch the outcome inside the future.
        let inner = instrument(
            args,
            &future.block.stmts,
            Body::AsyncBlock(future.capture.is_some()),
        );
        future.block = syn::parse_quote!({ #inner });
        quote! { #(#stmts)* }
    } else {
        instrument(args, &stmts, Body::Sync(return_type))
    };
    Ok(quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #entry
            #body
        }
    })
}

/// What the statements being instrumented are the body of.
enum Body<'a> {
    Sync(Option<&'a Type>),
    AsyncFn(Option<&'a Type>),
    /// An `async` block; `true` if it was `async move`.
    AsyncBlock(bool),
}

/// The statements with the `panics` guard and the `outcome` count added.
fn instrument(args: &Args, stmts: &[Stmt], body: Body<'_>) -> TokenStream {
    let stage = &args.stage;
    let derived = |suffix: &str| LitStr::new(&format!("{}.{suffix}", stage.value()), stage.span());
    // Mixed-site names: the user's statements can neither see nor shadow them.
    let guard = Ident::new("__titus_count_on_panic", Span::mixed_site());
    let result = Ident::new("__titus_count_result", Span::mixed_site());

    let on_panic = args.panics.as_ref().map(|_| {
        let panic_stage = derived("panic");
        quote! {
            let #guard = ::titus_count::__private::OnPanic::new(|| {
                ::titus_count::__private::count!(#panic_stage);
            });
        }
    });
    let Some(outcome) = &args.outcome else {
        return quote! { #on_panic #(#stmts)* };
    };
    let (ok, err) = (derived("ok"), derived("err"));
    let outcome_span = match &body {
        Body::Sync(Some(ty)) | Body::AsyncFn(Some(ty)) => ty.span(),
        _ => outcome.span(),
    };
    let run = match body {
        Body::Sync(ty) => {
            let annotation = ty.filter(|ty| !has_impl_trait(ty)).map(|ty| quote!(-> #ty));
            // Called through an `FnOnce` bound, so the body may move out of
            // its captures (returning `self`, say) as the function could.
            quote! {
                let #result = ::titus_count::__private::call_once(move || #annotation { #(#stmts)* });
            }
        }
        Body::AsyncFn(ty) => match ty.filter(|ty| !has_impl_trait(ty)) {
            Some(ty) => quote! {
                let #result = ::titus_count::__private::output_of::<#ty, _>(async move { #(#stmts)* }).await;
            },
            None => quote! { let #result = async move { #(#stmts)* }.await; },
        },
        Body::AsyncBlock(is_move) => {
            let capture = is_move.then(|| quote!(move));
            quote! { let #result = async #capture { #(#stmts)* }.await; }
        }
    };
    // Spanned at the return type, so a function that does not return a
    // `Result` is reported there.
    let located = Ident::new(
        "__titus_count_result",
        Span::mixed_site().located_at(outcome_span),
    );
    let is_ok = match &body {
        Body::Sync(Some(ty)) | Body::AsyncFn(Some(ty)) if !has_impl_trait(ty) => {
            quote_spanned! {outcome_span=> ::titus_count::__private::is_ok::<#ty>(&#located) }
        }
        _ => quote_spanned! {outcome_span=> ::titus_count::__private::Outcome::is_ok(&#located) },
    };
    quote! {
        #on_panic
        #run
        if #is_ok {
            ::titus_count::__private::count!(#ok);
        } else {
            ::titus_count::__private::count!(#err);
        }
        #result
    }
}

/// The `async` block a sync function returns as its tail expression, bare or
/// in `Box::pin(...)`.
fn tail_async_block(stmts: &mut [Stmt]) -> Option<&mut ExprAsync> {
    let Some(Stmt::Expr(tail, None)) = stmts.last_mut() else {
        return None;
    };
    match tail {
        Expr::Async(block) => Some(block),
        Expr::Call(call) if call.args.len() == 1 => {
            let is_pin = matches!(&*call.func, Expr::Path(p)
                if p.path.segments.last().is_some_and(|s| s.ident == "pin"));
            match call.args.first_mut() {
                Some(Expr::Async(block)) if is_pin => Some(block),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether a type mentions `impl Trait`, which a closure's return type
/// cannot name.
fn has_impl_trait(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tree| match tree {
            proc_macro2::TokenTree::Ident(i) => i == "impl",
            proc_macro2::TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(quote!(#ty))
}

/// Whether the tokens are an item that the compiler would accept where the
/// attribute was: at module level, in a trait, or in an impl block.
fn is_item(tokens: &TokenStream) -> bool {
    syn::parse2::<syn::Item>(tokens.clone()).is_ok()
        || syn::parse2::<syn::TraitItem>(tokens.clone()).is_ok()
        || syn::parse2::<syn::ImplItem>(tokens.clone()).is_ok()
}
