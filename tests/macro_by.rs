//! `by = EXPR` counts an amount evaluated on entry, with the parameters in
//! scope: batch handlers that send many messages at once.

mod support;

use support::block_on;
use titus_count::counted;

fn count_of(stage: &str) -> u64 {
    titus_count::local_totals().get(stage).copied().unwrap_or(0)
}

#[counted("by.emit", by = batch.len())]
fn emit(batch: Vec<String>) -> usize {
    // The batch is consumed here; `by` was evaluated before.
    batch.into_iter().map(|s| s.len()).sum()
}

struct Sender {
    window: u32,
}

impl Sender {
    #[counted("by.window", by = self.window)]
    fn send(&mut self) {
        self.window *= 2;
    }

    #[counted("by.async", by = n)]
    async fn send_async(&self, n: u8) -> u8 {
        n
    }
}

#[test]
fn by_counts_an_expression_of_the_parameters() {
    assert_eq!(emit(vec!["a".into(), "bc".into(), "def".into()]), 6);
    assert_eq!(emit(Vec::new()), 0);
    assert_eq!(count_of("by.emit"), 3);

    let mut s = Sender { window: 2 };
    s.send();
    s.send();
    assert_eq!(count_of("by.window"), 2 + 4);

    assert_eq!(block_on(s.send_async(5)), 5);
    assert_eq!(count_of("by.async"), 5);
}

#[counted("by.outcome", by = items.len(), outcome)]
fn store(items: &[u32]) -> Result<(), String> {
    if items.contains(&0) {
        return Err("zero".into());
    }
    Ok(())
}

#[test]
fn by_counts_the_entry_and_outcome_counts_calls() {
    store(&[1, 2, 3]).unwrap();
    store(&[0, 1]).unwrap_err();
    assert_eq!(count_of("by.outcome"), 5);
    assert_eq!(count_of("by.outcome.ok"), 1);
    assert_eq!(count_of("by.outcome.err"), 1);
}
