//! The `#[counted]` attribute of [titus-count](https://docs.rs/titus-count).
//!
//! Use it through the `titus-count` crate, which documents it:
//! `use titus_count::counted;`.

#![deny(missing_docs)]

mod args;
mod expand;

use proc_macro::TokenStream;

/// Counts every call of the function under a stage. See the `titus-count`
/// crate for the documentation.
#[proc_macro_attribute]
pub fn counted(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(args.into(), item.into()).into()
}
