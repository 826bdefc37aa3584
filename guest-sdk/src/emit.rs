//! Emitting events to the output topics declared under `[[produce]]`.
//!
//! Emitted events are held with the event's transaction and published only if
//! the handler succeeds. The host gives each one a deterministic id (module,
//! input event, emit index), so a re-run after a crash produces the same ids.

use crate::{Failure, Result, backend};
use serde::Serialize;

/// Emit `data` with CloudEvents type `ty` to `topic` (the input's key is kept).
pub fn emit(topic: &str, ty: &str, data: impl Into<Vec<u8>>) -> Result {
    Output::new(topic, ty).data(data).send()
}

/// Emit `value` serialized as JSON.
pub fn emit_json<T: Serialize + ?Sized>(topic: &str, ty: &str, value: &T) -> Result {
    Output::new(topic, ty).json(value)?.send()
}

/// An event being built for [`Output::send`].
///
/// ```
/// # sluice_guest::testing::TestHost::install();
/// use sluice_guest::Output;
/// Output::new("alerts", "alert.raised").key("c1").json(&serde_json::json!({"level": 3}))?.send()?;
/// # Ok::<(), sluice_guest::Failure>(())
/// ```
#[derive(Debug, Clone)]
pub struct Output<'a> {
    pub(crate) topic: &'a str,
    pub(crate) ty: &'a str,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) data: Vec<u8>,
    pub(crate) subject: Option<String>,
    pub(crate) datacontenttype: Option<String>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

impl<'a> Output<'a> {
    /// An empty event of type `ty` for `topic`.
    pub fn new(topic: &'a str, ty: &'a str) -> Self {
        Output {
            topic,
            ty,
            key: None,
            data: Vec::new(),
            subject: None,
            datacontenttype: None,
            headers: Vec::new(),
        }
    }
    /// Partition key (default: the input event's key).
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(key.as_ref().to_vec());
        self
    }
    /// Raw payload.
    pub fn data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = data.into();
        self
    }
    /// JSON payload (sets `datacontenttype` to `application/json`).
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self> {
        self.data = serde_json::to_vec(value)
            .map_err(|e| Failure::Reject(format!("cannot serialize output: {e}")))?;
        self.datacontenttype = Some("application/json".into());
        Ok(self)
    }
    /// CloudEvents `subject`.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }
    /// CloudEvents `datacontenttype`.
    pub fn content_type(mut self, ct: impl Into<String>) -> Self {
        self.datacontenttype = Some(ct.into());
        self
    }
    /// An extra header.
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }
    /// Queue the event. Fails (as a reject: retrying would fail the same way) if
    /// the topic is not declared in the manifest or an output limit is reached.
    pub fn send(self) -> Result {
        backend::emit(&self)
    }
}
