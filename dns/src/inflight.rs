//! In-flight de-duplication: one fetch per key, every waiter gets its answer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use tokio::sync::oneshot;

use crate::cache::Answer;

/// The callers waiting for one running fetch.
type Waiters<V> = Vec<oneshot::Sender<Answer<V>>>;

pub(crate) struct InFlight<V> {
    waiters: RefCell<HashMap<Rc<str>, Waiters<V>>>,
}

impl<V: Clone> InFlight<V> {
    pub(crate) fn new() -> Self {
        Self {
            waiters: RefCell::new(HashMap::new()),
        }
    }

    /// Registers a waiter for `key`. The flag is true when no fetch for `key`
    /// is running yet: the caller must start one (and later call [`Self::finish`]).
    pub(crate) fn wait(&self, key: &Rc<str>) -> (oneshot::Receiver<Answer<V>>, bool) {
        let (tx, rx) = oneshot::channel();
        let mut map = self.waiters.borrow_mut();
        match map.get_mut(&**key) {
            Some(list) => {
                list.push(tx);
                (rx, false)
            }
            None => {
                map.insert(key.clone(), vec![tx]);
                (rx, true)
            }
        }
    }

    /// Marks a fetch for `key` as running without waiting for it (refresh,
    /// prefetch). False when one is already running.
    pub(crate) fn begin(&self, key: &Rc<str>) -> bool {
        let mut map = self.waiters.borrow_mut();
        if map.contains_key(&**key) {
            return false;
        }
        map.insert(key.clone(), Vec::new());
        true
    }

    /// Ends the fetch for `key`, handing `answer` to every waiter.
    pub(crate) fn finish(&self, key: &str, answer: &Answer<V>) {
        let list = self.waiters.borrow_mut().remove(key).unwrap_or_default();
        for tx in list {
            // A waiter that went away (its task was dropped) needs no answer.
            let _ = tx.send(answer.clone());
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.waiters.borrow().len()
    }
}
