//! `#[counted]` on every shape of function: free functions, methods with
//! every receiver, generics, `impl Trait`, patterns, `unsafe` and `extern`
//! functions, nested and macro-generated functions, trait default methods,
//! diverging functions and early returns.

use std::fmt::Display;
use std::rc::Rc;
use std::sync::Arc;

use titus_count::counted;

fn count_of(stage: &str) -> u64 {
    titus_count::local_totals().get(stage).copied().unwrap_or(0)
}

#[counted("shape.free")]
fn free(x: u32) -> u32 {
    x * 2
}

#[test]
fn free_functions() {
    assert_eq!(free(2) + free(3), 10);
    assert_eq!(count_of("shape.free"), 2);
}

#[derive(Clone)]
struct Handler {
    n: u32,
}

impl Handler {
    #[counted("shape.recv.value")]
    fn by_value(self) -> u32 {
        self.n
    }
    #[counted("shape.recv.mut_value")]
    fn by_mut_value(mut self) -> u32 {
        self.n += 1;
        self.n
    }
    #[counted("shape.recv.ref")]
    fn by_ref(&self) -> u32 {
        self.n
    }
    #[counted("shape.recv.mut")]
    fn by_mut(&mut self) {
        self.n += 1;
    }
    #[counted("shape.recv.box")]
    #[allow(clippy::boxed_local)]
    fn boxed(self: Box<Self>) -> u32 {
        self.n
    }
    #[counted("shape.recv.arc")]
    fn arc(self: Arc<Self>) -> u32 {
        self.n
    }
    #[counted("shape.recv.rc")]
    fn rc(self: Rc<Self>) -> u32 {
        self.n
    }
    #[counted("shape.recv.lifetime")]
    fn with_lifetime<'a>(&'a self, other: &'a str) -> &'a str {
        if self.n > 0 { other } else { "" }
    }
    #[counted("shape.assoc")]
    fn new(n: u32) -> Self {
        Handler { n }
    }
}

#[test]
fn methods_with_every_receiver() {
    let mut h = Handler::new(1);
    h.by_mut();
    assert_eq!(h.by_ref(), 2);
    assert_eq!(h.clone().by_value(), 2);
    assert_eq!(h.clone().by_mut_value(), 3);
    assert_eq!(Box::new(h.clone()).boxed(), 2);
    assert_eq!(Arc::new(h.clone()).arc(), 2);
    assert_eq!(Rc::new(h.clone()).rc(), 2);
    assert_eq!(h.with_lifetime("x"), "x");
    for stage in [
        "shape.recv.value",
        "shape.recv.mut_value",
        "shape.recv.ref",
        "shape.recv.mut",
        "shape.recv.box",
        "shape.recv.arc",
        "shape.recv.rc",
        "shape.recv.lifetime",
        "shape.assoc",
    ] {
        assert_eq!(count_of(stage), 1, "{stage}");
    }
}

trait Stage {
    fn handle(&self, x: u32) -> u32;

    #[counted("shape.trait.default")]
    fn describe(&self) -> String {
        format!("stage {}", self.handle(0))
    }
}

impl Stage for Handler {
    #[counted("shape.trait.impl")]
    fn handle(&self, x: u32) -> u32 {
        self.n + x
    }
}

#[test]
fn trait_impls_and_default_methods() {
    let h = Handler { n: 5 };
    assert_eq!(h.describe(), "stage 5");
    assert_eq!(h.handle(1), 6);
    assert_eq!(count_of("shape.trait.default"), 1);
    assert_eq!(count_of("shape.trait.impl"), 2);
}

#[counted("shape.generic")]
fn generic<'a, T, const N: usize>(items: &'a [T; N]) -> Option<&'a T>
where
    T: PartialOrd,
{
    items.iter().fold(None, |best, x| match best {
        Some(b) if b >= x => Some(b),
        _ => Some(x),
    })
}

#[test]
fn generic_functions_share_one_site() {
    assert_eq!(generic(&[1, 3, 2]), Some(&3));
    assert_eq!(generic(&["a", "b"]), Some(&"b"));
    assert_eq!(generic::<u8, 0>(&[]), None);
    assert_eq!(count_of("shape.generic"), 3);
}

#[counted("shape.impl_trait")]
fn impl_trait(x: impl Display, y: impl Into<String>) -> impl Display {
    format!("{x}{}", y.into())
}

#[counted("shape.patterns")]
fn patterns((a, b): (u32, u32), Handler { n }: Handler, [first, ..]: [u8; 3], _: ()) -> u32 {
    a + b + n + u32::from(first)
}

#[test]
fn impl_trait_and_patterns() {
    assert_eq!(impl_trait(1, "a").to_string(), "1a");
    assert_eq!(patterns((1, 2), Handler { n: 3 }, [4, 0, 0], ()), 10);
    assert_eq!(count_of("shape.impl_trait"), 1);
    assert_eq!(count_of("shape.patterns"), 1);
}

/// Reads through a raw pointer.
///
/// # Safety
///
/// `p` must be valid for reads.
#[counted("shape.unsafe")]
unsafe fn read_raw(p: *const u32) -> u32 {
    // SAFETY: the caller promises `p` is valid.
    unsafe { *p }
}

#[counted("shape.extern")]
extern "C" fn callback(x: i32) -> i32 {
    x + 1
}

/// `panics` on an ABI that may unwind: counted, and the panic goes on.
#[counted("shape.extern_unwind", panics)]
extern "C-unwind" fn may_unwind(fail: bool) -> i32 {
    assert!(!fail, "failed across the C-unwind boundary");
    1
}

#[test]
fn unsafe_and_extern_functions() {
    let x = 7;
    // SAFETY: `&x` is valid for reads.
    assert_eq!(unsafe { read_raw(&x) }, 7);
    let f: extern "C" fn(i32) -> i32 = callback;
    assert_eq!(f(1), 2);
    assert_eq!(count_of("shape.unsafe"), 1);
    assert_eq!(count_of("shape.extern"), 1);

    assert_eq!(may_unwind(false), 1);
    assert!(std::panic::catch_unwind(|| may_unwind(true)).is_err());
    assert_eq!(count_of("shape.extern_unwind"), 2);
    assert_eq!(count_of("shape.extern_unwind.panic"), 1);
}

mod inner {
    pub mod deeper {
        #[titus_count::counted("shape.module")]
        pub fn in_module() {}
    }
}

macro_rules! make_handler {
    ($name:ident, $stage:literal) => {
        #[counted($stage)]
        fn $name() -> &'static str {
            $stage
        }
    };
}

make_handler!(from_macro_a, "shape.macro.a");
make_handler!(from_macro_b, "shape.macro.b");

#[test]
fn modules_macros_and_nested_functions() {
    #[counted("shape.nested")]
    fn nested(depth: u32) -> u32 {
        #[counted("shape.nested.inner")]
        fn innermost() -> u32 {
            1
        }
        if depth == 0 {
            innermost()
        } else {
            nested(depth - 1)
        }
    }
    inner::deeper::in_module();
    assert_eq!(from_macro_a(), "shape.macro.a");
    assert_eq!(from_macro_b(), "shape.macro.b");
    assert_eq!(nested(3), 1);
    assert_eq!(count_of("shape.module"), 1);
    assert_eq!(count_of("shape.macro.a"), 1);
    assert_eq!(count_of("shape.macro.b"), 1);
    assert_eq!(count_of("shape.nested"), 4);
    assert_eq!(count_of("shape.nested.inner"), 1);
}

#[counted("shape.early")]
fn early_return(x: i32) -> Result<i32, String> {
    if x < 0 {
        return Err("negative".to_owned());
    }
    let parsed: i32 = x.to_string().parse().map_err(|_| "unparsable".to_owned())?;
    Ok(parsed)
}

#[counted("shape.never")]
fn never(message: &str) -> ! {
    panic!("{message}")
}

#[test]
fn early_returns_question_marks_and_diverging_functions() {
    assert_eq!(early_return(-1), Err("negative".to_owned()));
    assert_eq!(early_return(4), Ok(4));
    assert_eq!(count_of("shape.early"), 2);
    let panicked = std::panic::catch_unwind(|| never("stop")).is_err();
    assert!(panicked);
    assert_eq!(count_of("shape.never"), 1);
}

#[test]
fn shadowed_names_and_inner_attributes_keep_their_meaning() {
    #[counted("shape.shadow")]
    fn shadow(x: u32) -> u32 {
        #![allow(clippy::let_and_return)]
        let x = x + 1;
        let __titus_count_result = x * 2;
        __titus_count_result
    }
    assert_eq!(shadow(1), 4);
    assert_eq!(count_of("shape.shadow"), 1);
}
