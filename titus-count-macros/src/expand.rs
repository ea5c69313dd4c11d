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
use syn::visit::Visit;
use syn::{AttrStyle, Expr, ExprAsync, Ident, ItemFn, LitStr, ReturnType, Stmt, Type};

use crate::args::{Args, USAGE};

/// Parses the arguments and expands the function, or emits the error.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    match syn::parse2::<Args>(args).and_then(|args| try_expand(&args, item.clone())) {
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
    // A panic cannot unwind out of an `extern "C"` function: the process
    // aborts, and no count could be delivered.
    if let (Some(panics), Some(abi)) = (&args.panics, &sig.abi) {
        let name = abi
            .name
            .as_ref()
            .map_or_else(|| "C".to_owned(), LitStr::value);
        if name != "Rust" && !name.ends_with("-unwind") {
            return Err(syn::Error::new_spanned(
                panics,
                format!(
                    "`panics` cannot count panics of `extern \"{name}\" fn {}`: a panic there aborts the process; use `extern \"{name}-unwind\"` if it may unwind",
                    sig.ident
                ),
            ));
        }
    }
    if args.outcome.is_some()
        && sig.asyncness.is_none()
        && let Some(track_caller) = attrs.iter().find(|a| a.path().is_ident("track_caller"))
    {
        return Err(syn::Error::new_spanned(
            track_caller,
            format!(
                "`outcome` runs the body of `{}` in a closure, where `#[track_caller]` would no longer report the caller; count with `count!` in the body instead",
                sig.ident
            ),
        ));
    }
    let (inner_attrs, outer_attrs): (Vec<_>, Vec<_>) = attrs
        .into_iter()
        .partition(|a| matches!(a.style, AttrStyle::Inner(_)));

    let stage = &args.stage;
    let private = args.private();
    let entry = match &args.by {
        // Spanned at the user's expression, so a wrong type is reported there.
        // `count!` takes the amount as it is, so a literal (`by = 2`) is
        // checked and typed like one given to `count!` itself.
        Some(by) => {
            let private = args.private_at(by.span());
            quote_spanned! {by.span()=>
                #private::count!(#stage, #by);
            }
        }
        None => quote! { #private::count!(#stage); },
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
    } else if returns_future(return_type) || tail_async_block(&mut stmts).is_some() {
        // A sync function returning a future (as `#[async_trait]` writes
        // them): count on call, watch the outcome inside the future.
        future_body(args, &mut stmts, return_type)?;
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
    let private = args.private();
    let derived = |suffix: &str| LitStr::new(&format!("{}.{suffix}", stage.value()), stage.span());
    // Mixed-site names: the user's statements can neither see nor shadow them.
    let guard = Ident::new("__titus_count_on_panic", Span::mixed_site());

    let inner = match &args.outcome {
        Some(outcome) => count_outcome(
            args,
            stmts,
            &body,
            outcome.span(),
            derived("ok"),
            derived("err"),
        ),
        None => quote! { #(#stmts)* },
    };
    let Some(_) = &args.panics else {
        return inner;
    };
    let panic_stage = derived("panic");
    let on_panic = quote! { || { #private::count!(#panic_stage); } };
    match body {
        Body::Sync(_) => quote! {
            let #guard = #private::OnPanic::new(#on_panic);
            #inner
        },
        // A guard held across an `.await` would also fire if the future were
        // dropped during somebody else's panic: watch each poll instead.
        Body::AsyncFn(ty) => {
            let future = match ty.and_then(annotation_type) {
                Some(ty) => quote! {
                    #private::output_of::<#ty, _>(async move { #inner })
                },
                None => quote! { async move { #inner } },
            };
            quote! { #private::watch_panics(#future, #on_panic).await }
        }
        Body::AsyncBlock(is_move) => {
            let capture = is_move.then(|| quote!(move));
            quote! {
                #private::watch_panics(async #capture { #inner }, #on_panic).await
            }
        }
    }
}

/// The statements run for their result, counted as `STAGE.ok` or `STAGE.err`.
fn count_outcome(
    args: &Args,
    stmts: &[Stmt],
    body: &Body<'_>,
    outcome_span: Span,
    ok: LitStr,
    err: LitStr,
) -> TokenStream {
    let private = args.private();
    let result = Ident::new("__titus_count_result", Span::mixed_site());
    let outcome_span = match body {
        Body::Sync(Some(ty)) | Body::AsyncFn(Some(ty)) => ty.span(),
        _ => outcome_span,
    };
    // The declared return type as the annotations can name it, if they can.
    let declared = match body {
        Body::Sync(Some(ty)) | Body::AsyncFn(Some(ty)) => annotation_type(ty),
        _ => None,
    };
    let run = match body {
        Body::Sync(_) => {
            let annotation = declared.as_ref().map(|ty| quote!(-> #ty));
            // Called through an `FnOnce` bound, so the body may move out of
            // its captures (returning `self`, say) as the function could.
            quote! {
                let #result = #private::call_once(move || #annotation { #(#stmts)* });
            }
        }
        Body::AsyncFn(_) => match &declared {
            Some(ty) => quote! {
                let #result = #private::output_of::<#ty, _>(async move { #(#stmts)* }).await;
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
    let private_here = args.private_at(outcome_span);
    let is_ok = match declared {
        Some(ty) => quote_spanned! {outcome_span=> #private_here::is_ok::<#ty>(&#located) },
        None => quote_spanned! {outcome_span=> #private_here::Outcome::is_ok(&#located) },
    };
    quote! {
        #run
        if #is_ok {
            #private::count!(#ok);
        } else {
            #private::count!(#err);
        }
        #result
    }
}

/// Instruments the tail `async` block of a sync function that returns a
/// future: the outcome and panics are the future's, not the call's.
fn future_body(args: &Args, stmts: &mut [Stmt], return_type: Option<&Type>) -> syn::Result<()> {
    let usage = "a function returning a future is counted when its future is the tail expression, `async move { ... }` or `Box::pin(async move { ... })`";
    let option = (args.outcome.as_ref().map(Spanned::span))
        .or(args.panics.as_ref().map(Spanned::span))
        .unwrap_or_else(Span::call_site);
    let at = return_type.map_or(option, |ty| ty.span());
    let no_future = || {
        syn::Error::new(
            at,
            format!("`outcome` and `panics` need the future itself: {usage}"),
        )
    };
    let Some((tail, prefix)) = stmts.split_last_mut() else {
        return Err(no_future());
    };
    // A future returned early would escape the watch: refuse rather than
    // miscount.
    if let Some(early) = prefix.iter().find_map(find_return) {
        return Err(syn::Error::new(
            early,
            format!(
                "`outcome` and `panics` watch the future this function returns last, and this `return` would skip them: {usage}"
            ),
        ));
    }
    let Some(future) = tail_async_block(std::slice::from_mut(tail)) else {
        return Err(no_future());
    };
    let inner = instrument(
        args,
        &future.block.stmts,
        Body::AsyncBlock(future.capture.is_some()),
    );
    future.block = syn::parse_quote!({ #inner });
    Ok(())
}

/// Whether a return type is a future: `impl Future<..>`, `Pin<Box<dyn
/// Future<..>>>`, `Box<dyn Future<..>>` or a `BoxFuture` alias. Only the
/// outermost type counts: `Result<BoxFuture<..>, E>` is a `Result`. (The
/// check is by name: a type alias of a future is not seen through.)
fn returns_future(ty: Option<&Type>) -> bool {
    fn names_future(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tree| match tree {
            proc_macro2::TokenTree::Ident(i) => i == "Future",
            proc_macro2::TokenTree::Group(g) => names_future(g.stream()),
            _ => false,
        })
    }
    match ty {
        Some(Type::ImplTrait(t)) => t.bounds.iter().any(|bound| {
            matches!(bound, syn::TypeParamBound::Trait(t)
                if t.path.segments.last().is_some_and(|s| s.ident == "Future"))
        }),
        Some(Type::Path(p)) => p.path.segments.last().is_some_and(|s| {
            s.ident == "BoxFuture"
                || s.ident == "LocalBoxFuture"
                || ((s.ident == "Pin" || s.ident == "Box") && names_future(quote!(#s)))
        }),
        Some(Type::Paren(p)) => returns_future(Some(&p.elem)),
        Some(Type::Group(g)) => returns_future(Some(&g.elem)),
        _ => false,
    }
}

/// The type with every `impl Trait` in it replaced by `_`: what a closure's
/// return type or a turbofish can say of it, keeping the rest (the error
/// type that `?` and `return` convert into, say) for inference. `None` if
/// an `impl` is left where the walk does not reach (a pointer, a trait
/// object's bounds): then the type is left for inference whole.
fn annotation_type(ty: &Type) -> Option<Type> {
    let ty = infer_impl_trait(ty);
    (!has_impl_trait(&ty)).then_some(ty)
}

/// Whether a type still mentions `impl Trait`.
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

fn infer_impl_trait(ty: &Type) -> Type {
    // Through tokens: syn's `Clone` impls are a feature this crate leaves off.
    let mut ty: Type = syn::parse2(quote!(#ty)).expect("a type parses again");
    fn walk(ty: &mut Type) {
        match ty {
            Type::ImplTrait(_) => *ty = syn::parse_quote!(_),
            Type::Path(p) => {
                for segment in &mut p.path.segments {
                    if let syn::PathArguments::AngleBracketed(args) = &mut segment.arguments {
                        for arg in &mut args.args {
                            if let syn::GenericArgument::Type(t) = arg {
                                walk(t);
                            }
                        }
                    }
                }
            }
            Type::Reference(r) => walk(&mut r.elem),
            Type::Tuple(t) => t.elems.iter_mut().for_each(walk),
            Type::Array(a) => walk(&mut a.elem),
            Type::Slice(s) => walk(&mut s.elem),
            Type::Paren(p) => walk(&mut p.elem),
            Type::Group(g) => walk(&mut g.elem),
            _ => {}
        }
    }
    walk(&mut ty);
    ty
}

/// The first `return` of a statement, outside closures, `async` blocks and
/// nested items (whose `return` is their own).
fn find_return(stmt: &Stmt) -> Option<Span> {
    struct Find(Option<Span>);
    impl<'ast> Visit<'ast> for Find {
        fn visit_expr_return(&mut self, e: &'ast syn::ExprReturn) {
            self.0 = self.0.or(Some(e.return_token.span));
        }
        fn visit_expr_closure(&mut self, _: &'ast syn::ExprClosure) {}
        fn visit_expr_async(&mut self, _: &'ast ExprAsync) {}
        fn visit_item(&mut self, _: &'ast syn::Item) {}
    }
    let mut find = Find(None);
    find.visit_stmt(stmt);
    find.0
}

/// The `async` block a sync function returns as its tail expression: bare,
/// in `Box::pin(...)`, or boxed with `.boxed()` / `.boxed_local()`.
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
        // `async { .. }.boxed()`, as the `futures` crate's `FutureExt` has it.
        Expr::MethodCall(call)
            if call.args.is_empty() && (call.method == "boxed" || call.method == "boxed_local") =>
        {
            match &mut *call.receiver {
                Expr::Async(block) => Some(block),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether the tokens are an item that the compiler would accept where the
/// attribute was: at module level, in a trait, or in an impl block.
fn is_item(tokens: &TokenStream) -> bool {
    syn::parse2::<syn::Item>(tokens.clone()).is_ok()
        || syn::parse2::<syn::TraitItem>(tokens.clone()).is_ok()
        || syn::parse2::<syn::ImplItem>(tokens.clone()).is_ok()
}
