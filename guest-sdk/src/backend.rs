//! Where the SDK's calls go: the host's imports inside a component, or the
//! in-memory [`crate::testing`] host on a native target.

#[cfg(target_arch = "wasm32")]
pub use wasm::*;

#[cfg(target_arch = "wasm32")]
mod wasm {
    #[doc(hidden)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "sluice:processor/batch-processor",
            ownership: Borrowing { duplicate_if_necessary: false },
            pub_export_macro: true,
            export_macro_name: "__export_bindings",
            default_bindings_module: "sluice_guest::__private::bindings",
        });
    }

    use crate::{Event, Failure, Result};
    use bindings::sluice::processor::{batch, config, emit, log, state, types};

    fn to_wit(f: Failure) -> bindings::Failure {
        match f {
            Failure::Retry(m) => types::Failure::Retry(m),
            Failure::Reject(m) => types::Failure::Reject(m),
        }
    }

    pub fn run_one(
        e: bindings::Event,
        handler: fn(&Event<'_>) -> Result,
    ) -> core::result::Result<(), bindings::Failure> {
        let view = sluice_wire::EventRef {
            id: &e.id,
            source: &e.source,
            ty: &e.type_,
            subject: e.subject.as_deref(),
            time: e.time.as_deref(),
            datacontenttype: e.datacontenttype.as_deref(),
            dataschema: e.dataschema.as_deref(),
            key: e.key.as_deref(),
            data: &e.data,
            headers: sluice_wire::Headers::List(&e.headers),
            topic: &e.topic,
            partition: e.partition,
            offset: e.offset,
        };
        handler(&Event(view)).map_err(to_wit)
    }

    pub fn run_batch(
        events: &[u8],
        handler: fn(&Event<'_>) -> Result,
    ) -> Vec<core::result::Result<(), bindings::Failure>> {
        let frames = match sluice_wire::batch_frames(events) {
            Ok(f) => f,
            Err(e) => {
                // The host built this batch; a bad one is a host bug. Fail the
                // first event so the host falls back to one-at-a-time calls.
                return vec![Err(types::Failure::Retry(e.to_string()))];
            }
        };
        let mut out = Vec::with_capacity(frames.len());
        for (i, frame) in frames.enumerate() {
            batch::start_event(i as u32);
            let r = match sluice_wire::EventRef::decode(frame) {
                Ok(ev) => handler(&Event(ev)).map_err(to_wit),
                Err(e) => Err(types::Failure::Reject(e.to_string())),
            };
            out.push(r);
        }
        out
    }

    pub fn state_get(key: &[u8]) -> Option<Vec<u8>> {
        state::get(key)
    }
    pub fn state_set(key: &[u8], value: &[u8]) -> Result {
        state::set(key, value).map_err(Failure::Reject)
    }
    pub fn state_delete(key: &[u8]) {
        state::delete(key)
    }
    pub fn state_scan(prefix: &[u8], after: Option<&[u8]>, limit: u32) -> crate::state::Page {
        let page = state::scan_prefix(prefix, after, limit);
        (page.entries, page.next)
    }

    pub fn emit(out: &crate::Output<'_>) -> Result {
        let headers: Vec<(&str, &[u8])> = out
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        emit::emit(types::OutgoingEvent {
            topic: out.topic,
            type_: out.ty,
            key: out.key.as_deref(),
            data: &out.data,
            subject: out.subject.as_deref(),
            datacontenttype: out.datacontenttype.as_deref(),
            headers: &headers,
        })
        .map_err(Failure::Reject)
    }

    pub fn log(level: crate::log::Level, msg: &str) {
        use crate::log::Level as L;
        let l = match level {
            L::Trace => log::Level::Trace,
            L::Debug => log::Level::Debug,
            L::Info => log::Level::Info,
            L::Warn => log::Level::Warn,
            L::Error => log::Level::Error,
        };
        log::log(l, msg)
    }

    pub fn config_get(key: &str) -> Option<String> {
        config::get(key)
    }
    pub fn config_all() -> Vec<(String, String)> {
        config::all()
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use crate::testing::backend::*;
