//! Lag status judged over a window of samples, the way Burrow judges a
//! consumer group: not "is there lag" (a busy consumer always has some) but
//! "is the consumer keeping up".
//!
//! | status | when |
//! |---|---|
//! | `STOP` | the module is not consuming: paused, quarantined, failed or stopped |
//! | `OK` | lag is 0 now, or the window is not full yet |
//! | `STALL` | lag > 0 in every sample of the window and the cursor did not move |
//! | `WARN` | the cursor moved, but the lag never went down from one sample to the next |
//! | `OK` | otherwise: the consumer is catching up |

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// How a module keeps up with a partition (or, module level, with its worst one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum LagStatus {
    #[default]
    Ok,
    Warn,
    Stall,
    Stop,
}

impl LagStatus {
    /// Every status, best first.
    pub const ALL: [LagStatus; 4] = [
        LagStatus::Ok,
        LagStatus::Warn,
        LagStatus::Stall,
        LagStatus::Stop,
    ];

    /// `OK`, `WARN`, `STALL`, `STOP`.
    pub fn as_str(self) -> &'static str {
        match self {
            LagStatus::Ok => "OK",
            LagStatus::Warn => "WARN",
            LagStatus::Stall => "STALL",
            LagStatus::Stop => "STOP",
        }
    }
}

/// One sample: where the module's cursor was and how far behind the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    cursor: u64,
    lag: u64,
}

/// The last `len` samples of one partition.
#[derive(Debug, Clone)]
pub struct Window {
    samples: VecDeque<Sample>,
    len: usize,
}

impl Window {
    /// A window of `len` samples (at least 2).
    pub fn new(len: usize) -> Window {
        let len = len.max(2);
        Window {
            samples: VecDeque::with_capacity(len),
            len,
        }
    }

    /// Add a sample. A cursor that went back (a rewind) starts the window over.
    pub fn push(&mut self, cursor: u64, lag: u64) {
        if self.samples.back().is_some_and(|s| cursor < s.cursor) {
            self.samples.clear();
        }
        if self.samples.len() == self.len {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample { cursor, lag });
    }

    /// The status now; `consuming` is false for a module that does not read
    /// (paused, quarantined, failed, stopped).
    pub fn status(&self, consuming: bool) -> LagStatus {
        if !consuming {
            return LagStatus::Stop;
        }
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return LagStatus::Ok;
        };
        if last.lag == 0 || self.samples.len() < self.len {
            return LagStatus::Ok;
        }
        if self.samples.iter().any(|s| s.lag == 0) {
            return LagStatus::Ok;
        }
        if first.cursor == last.cursor {
            return LagStatus::Stall;
        }
        let never_down = self
            .samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .all(|(a, b)| b.lag >= a.lag);
        if never_down {
            LagStatus::Warn
        } else {
            LagStatus::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(samples: &[(u64, u64)]) -> Window {
        let mut w = Window::new(samples.len());
        for (c, l) in samples {
            w.push(*c, *l);
        }
        w
    }

    #[test]
    fn the_rules_of_the_table() {
        // (cursor, lag) samples, whether the module consumes, the verdict.
        type Case = (&'static [(u64, u64)], bool, LagStatus);
        let cases: &[Case] = &[
            // Not consuming: STOP, lag or not.
            (&[(5, 3), (5, 3), (5, 3)], false, LagStatus::Stop),
            (&[(5, 0), (5, 0), (5, 0)], false, LagStatus::Stop),
            // Caught up now.
            (&[(1, 9), (5, 5), (10, 0)], true, LagStatus::Ok),
            // Behind and not moving.
            (&[(5, 3), (5, 4), (5, 9)], true, LagStatus::Stall),
            // Moving, but lag never goes down.
            (&[(5, 3), (8, 3), (12, 6)], true, LagStatus::Warn),
            // Moving and catching up.
            (&[(5, 9), (8, 12), (20, 2)], true, LagStatus::Ok),
            // Was caught up within the window: no judgement of growth.
            (&[(5, 0), (5, 4), (5, 9)], true, LagStatus::Ok),
        ];
        for (samples, consuming, want) in cases {
            assert_eq!(window(samples).status(*consuming), *want, "{samples:?}");
        }
    }

    #[test]
    fn a_window_that_is_not_full_says_ok() {
        let mut w = Window::new(3);
        w.push(5, 3);
        w.push(5, 3);
        assert_eq!(w.status(true), LagStatus::Ok);
        w.push(5, 3);
        assert_eq!(w.status(true), LagStatus::Stall);
    }

    #[test]
    fn a_rewind_starts_the_window_over() {
        let mut w = Window::new(2);
        w.push(10, 5);
        w.push(10, 5);
        assert_eq!(w.status(true), LagStatus::Stall);
        w.push(0, 15);
        assert_eq!(w.status(true), LagStatus::Ok);
    }

    #[test]
    fn statuses_order_from_best_to_worst() {
        assert_eq!(LagStatus::ALL.iter().max(), Some(&LagStatus::Stop));
        assert!(LagStatus::Warn < LagStatus::Stall);
    }
}
