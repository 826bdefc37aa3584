//! Outputs through the outbox: written in the commit's `WriteBatch`,
//! published by the [`Relay`] after the commit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_wire::OwnedEvent;

use super::{Deliver, Output, Relay};
use crate::source::TopicError;
use crate::state::{Commit, Store};
use crate::util::Signal;

/// The outbox of a host whose outputs leave the database.
pub struct Outbox {
    /// Wakes the relay after a commit with outputs.
    signal: Arc<Signal>,
    relay: Mutex<Option<Relay>>,
}

impl Outbox {
    /// Start relaying `store`'s outbox to `to`.
    pub fn start(store: Arc<Store>, to: Box<dyn Deliver>) -> std::io::Result<Outbox> {
        let signal = Arc::new(Signal::default());
        let relay = Relay::start(store, to, signal.clone())?;
        Ok(Outbox {
            signal,
            relay: Mutex::new(Some(relay)),
        })
    }
}

impl Output for Outbox {
    fn commit(
        &self,
        mut commit: Commit<'_>,
        module: &str,
        outputs: Vec<(String, Vec<OwnedEvent>)>,
    ) -> Result<(), TopicError> {
        let any = !outputs.is_empty();
        let mut frame = Vec::new();
        for (_, events) in &outputs {
            for e in events {
                frame.clear();
                e.as_ref().encode_into(&mut frame);
                commit.outbox(module, &frame);
            }
        }
        commit.commit()?;
        if any {
            self.signal.ring();
        }
        Ok(())
    }

    fn stop(&self, drain: Duration) {
        if let Some(mut r) = self.relay.lock().unwrap().take() {
            r.stop(drain);
        }
    }
}
