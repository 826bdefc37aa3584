//! Outputs on the embedded log: appended in the commit's own `WriteBatch`,
//! so the log is its own outbox.

use sluice_wire::OwnedEvent;

use super::Output;
use crate::source::TopicError;
use crate::source::log::EventLog;
use crate::state::Commit;

impl Output for EventLog {
    fn commit(
        &self,
        commit: Commit<'_>,
        _module: &str,
        outputs: Vec<(String, Vec<OwnedEvent>)>,
    ) -> Result<(), TopicError> {
        if outputs.is_empty() {
            commit.commit()?;
        } else {
            self.append_into(commit.into_batch(), outputs)?;
        }
        Ok(())
    }

    fn stop(&self, _drain: std::time::Duration) {}
}
