//! `#[counted]` stacks to count one call under several stages, and combines
//! with other attributes: `#[tracing::instrument]`, `#[inline]`,
//! `#[must_use]`, `#[cfg]`, doc comments and `#[test]`.

use titus_count::counted;

fn count_of(stage: &str) -> u64 {
    titus_count::local_totals().get(stage).copied().unwrap_or(0)
}

#[counted("stack.all")]
#[counted("stack.parse", outcome)]
#[counted("stack.bytes", by = raw.len())]
fn parse(raw: &str) -> Result<u32, std::num::ParseIntError> {
    raw.parse()
}

#[test]
fn stacked_attributes_count_under_each_stage() {
    parse("12").unwrap();
    parse("x").unwrap_err();
    assert_eq!(count_of("stack.all"), 2);
    assert_eq!(count_of("stack.parse"), 2);
    assert_eq!(count_of("stack.parse.ok"), 1);
    assert_eq!(count_of("stack.parse.err"), 1);
    assert_eq!(count_of("stack.bytes"), 3);
}

/// Documented, inlined, must-use and traced.
#[counted("stack.combined")]
#[tracing::instrument(level = "debug")]
#[inline]
#[must_use]
fn combined(x: u32) -> u32 {
    x + 1
}

#[tracing::instrument]
#[counted("stack.combined_outer", outcome)]
fn traced_outside(x: u32) -> Result<u32, String> {
    Ok(x)
}

#[cfg(any())]
#[counted("stack.compiled_out")]
fn compiled_out() {}

#[counted("stack.cfg_after")]
#[cfg(not(any()))]
fn cfg_after() {}

#[test]
fn combines_with_other_attributes() {
    assert_eq!(combined(1), 2);
    assert_eq!(traced_outside(3), Ok(3));
    cfg_after();
    assert_eq!(count_of("stack.combined"), 1);
    assert_eq!(count_of("stack.combined_outer"), 1);
    assert_eq!(count_of("stack.combined_outer.ok"), 1);
    assert_eq!(count_of("stack.cfg_after"), 1);
    assert_eq!(count_of("stack.compiled_out"), 0);
}

#[counted("stack.test_fn")]
#[test]
fn counted_test_function() {
    assert_eq!(count_of("stack.test_fn"), 1);
}
