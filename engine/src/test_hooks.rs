//! Faults the end-to-end tests inject into a running engine; compiled only
//! with the `test-hooks` feature, which only the test suite enables.

use std::collections::HashSet;

use parking_lot::Mutex;

static PANIC_ON_BATCH: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// The next delivery task of `domain` that takes a batch panics while it
/// holds it (once): the test then sees what the shard does about a task
/// that died holding recipients and a connection slot.
pub fn panic_once_holding_a_batch(domain: &str) {
    PANIC_ON_BATCH
        .lock()
        .get_or_insert_with(HashSet::new)
        .insert(domain.to_ascii_lowercase());
}

/// Called by delivery right after it took a batch for `domain`.
pub(crate) fn on_batch_taken(domain: &str) {
    let hit = PANIC_ON_BATCH
        .lock()
        .as_mut()
        .is_some_and(|set| set.remove(domain));
    if hit {
        panic!("test hook: delivery task for {domain} panics holding its batch");
    }
}
