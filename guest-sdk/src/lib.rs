#![doc = include_str!("../README.md")]

pub use sluice_wire::Headers;

mod backend;
pub mod config;
mod emit;
pub mod log;
pub mod state;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use emit::{Output, emit, emit_json};

use std::fmt;
use std::ops::Deref;

/// The result a handler returns: `Ok(())`, or a [`Failure`] saying what the host
/// should do with the event.
pub type Result<T = (), E = Failure> = core::result::Result<T, E>;

/// Why an event was not handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Transient: the host retries the event in place, with backoff, up to the
    /// manifest's `[retry] max-attempts`, then dead-letters it.
    Retry(String),
    /// Permanent: the event goes to the module's dead-letter topic at once.
    Reject(String),
}

impl Failure {
    /// A transient failure.
    pub fn retry(msg: impl Into<String>) -> Self {
        Failure::Retry(msg.into())
    }
    /// A permanent failure.
    pub fn reject(msg: impl Into<String>) -> Self {
        Failure::Reject(msg.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Retry(m) => write!(f, "retry: {m}"),
            Failure::Reject(m) => write!(f, "reject: {m}"),
        }
    }
}

impl std::error::Error for Failure {}

/// Turn any error into a [`Failure`] with `?`: `.or_reject()?` / `.or_retry()?`.
pub trait ResultExt<T> {
    /// Map the error to [`Failure::Reject`], keeping its message.
    fn or_reject(self) -> Result<T>;
    /// Map the error to [`Failure::Retry`], keeping its message.
    fn or_retry(self) -> Result<T>;
}

impl<T, E: fmt::Display> ResultExt<T> for core::result::Result<T, E> {
    fn or_reject(self) -> Result<T> {
        self.map_err(|e| Failure::Reject(e.to_string()))
    }
    fn or_retry(self) -> Result<T> {
        self.map_err(|e| Failure::Retry(e.to_string()))
    }
}

/// One event as a handler sees it. Dereferences to [`sluice_wire::EventRef`]
/// for the raw fields (`id`, `source`, `ty`, `subject`, `data`, `key`, `topic`,
/// `partition`, `offset`, ...).
#[derive(Debug, Clone, Copy)]
pub struct Event<'a>(pub sluice_wire::EventRef<'a>);

impl<'a> Deref for Event<'a> {
    type Target = sluice_wire::EventRef<'a>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> Event<'a> {
    /// Parse `data` as JSON; a parse error rejects the event (it would fail the
    /// same way on every retry).
    pub fn json<T: serde::Deserialize<'a>>(&self) -> Result<T> {
        serde_json::from_slice(self.0.data).map_err(|e| {
            Failure::Reject(format!(
                "event {} data is not the expected JSON: {e}",
                self.0.id
            ))
        })
    }

    /// The partition key as UTF-8, if present and valid.
    pub fn key_str(&self) -> Option<&'a str> {
        self.0.key.and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The CloudEvents `type`.
    pub fn ty(&self) -> &'a str {
        self.0.ty
    }

    /// A transport header by name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.0.headers.get(name)
    }
}

/// Export `handler` as this component's entry point.
///
/// `handler` is a `fn(&Event) -> sluice_guest::Result`. The macro implements
/// both `handle` and the batched `handle-batch` exports of the
/// `sluice:processor/batch-processor` world on top of it. On a native target
/// (unit tests) it expands to nothing.
#[macro_export]
macro_rules! export {
    ($handler:path) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SluiceModule;
            impl $crate::__private::bindings::Guest for __SluiceModule {
                fn handle(
                    event: $crate::__private::bindings::Event,
                ) -> ::core::result::Result<(), $crate::__private::bindings::Failure> {
                    $crate::__private::run_one(event, $handler)
                }
                fn handle_batch(
                    events: ::std::vec::Vec<u8>,
                ) -> ::std::vec::Vec<
                    ::core::result::Result<(), $crate::__private::bindings::Failure>,
                > {
                    $crate::__private::run_batch(&events, $handler)
                }
            }
            $crate::__private::bindings::__export_bindings!(__SluiceModule with_types_in $crate::__private::bindings);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::backend::bindings;
    #[cfg(target_arch = "wasm32")]
    pub use crate::backend::{run_batch, run_one};
}
