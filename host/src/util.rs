//! Small synchronisation helpers shared by the host's threads.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A counter threads can wait on: `ring` wakes every `wait` that started before it.
#[derive(Default)]
pub struct Signal {
    count: Mutex<u64>,
    cv: Condvar,
}

impl Signal {
    /// Wake waiters.
    pub fn ring(&self) {
        *self.count.lock().unwrap() += 1;
        self.cv.notify_all();
    }

    /// The current count.
    pub fn seen(&self) -> u64 {
        *self.count.lock().unwrap()
    }

    /// Wait until the count differs from `seen`, or `timeout`.
    pub fn wait(&self, seen: u64, timeout: Duration) {
        let g = self.count.lock().unwrap();
        let _ = self.cv.wait_timeout_while(g, timeout, |c| *c == seen);
    }
}
