//! Small synchronisation helpers shared by the host's threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A named thread that watches a stop flag; `stop` (or drop) sets the flag and
/// waits for the thread to finish.
pub struct StoppableThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StoppableThread {
    /// Start `f` on a thread called `name`; `f` should return soon after `stop` is set.
    pub fn spawn(
        name: String,
        stop: Arc<AtomicBool>,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Self> {
        let thread = std::thread::Builder::new().name(name).spawn(f)?;
        Ok(StoppableThread {
            stop,
            thread: Some(thread),
        })
    }

    /// Set the stop flag without waiting (stop several threads at once, then
    /// [`StoppableThread::stop`] each).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Set the stop flag and wait for the thread; once it has run past
    /// `patience`, call `overdue` (which should make it return soon) every
    /// 100 ms until it has returned.
    pub fn stop_within(&mut self, patience: Duration, mut overdue: impl FnMut()) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + patience;
        let mut next = deadline;
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            let now = Instant::now();
            if now >= next {
                overdue();
                next = now + Duration::from_millis(100);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
    }

    /// Set the stop flag and wait for the thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StoppableThread {
    fn drop(&mut self) {
        self.stop();
    }
}

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

/// A boolean threads can wait on (a module's quarantine switch).
#[derive(Default)]
pub struct Flag {
    on: Mutex<bool>,
    cv: Condvar,
}

impl Flag {
    /// Set the flag and wake waiters.
    pub fn set(&self, on: bool) {
        *self.on.lock().unwrap() = on;
        self.cv.notify_all();
    }

    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        *self.on.lock().unwrap()
    }

    /// Wait until it is cleared, or `timeout`.
    pub fn wait_cleared(&self, timeout: Duration) {
        let g = self.on.lock().unwrap();
        let _ = self.cv.wait_timeout_while(g, timeout, |on| *on);
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), with `…` when
/// cut: what logs and status quote of text a module or a producer chose.
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_on_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("caf\u{e9}s", 4), "caf…");
        assert_eq!(clip("abcdef", 3), "abc…");
    }

    #[test]
    fn stop_within_keeps_calling_overdue_until_the_thread_returns() {
        // A thread that ignores its stop flag and returns only once it has
        // been told three times that it is overdue (one call is not enough:
        // a relay may start a new wait after the first abort).
        let told = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = told.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let mut t = StoppableThread::spawn("test".into(), stop.clone(), move || {
            while seen.load(Ordering::SeqCst) < 3 {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .unwrap();
        t.stop_within(Duration::from_millis(20), || {
            told.fetch_add(1, Ordering::SeqCst);
        });
        assert!(stop.load(Ordering::SeqCst));
        assert!(t.thread.is_none(), "joined");
        assert_eq!(told.load(Ordering::SeqCst), 3);

        // A thread that returns when stopped is never overdue.
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let mut t = StoppableThread::spawn("test".into(), stop, move || {
            while !s.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .unwrap();
        t.stop_within(Duration::from_secs(60), || panic!("not overdue"));
    }
}
