//! The binary event frame shared by the Sluice host and its guest SDKs.
//!
//! One encoding serves two purposes. The embedded log stores every event as a
//! frame, and the host hands a module a *batch* of events as the concatenation of
//! those stored frames: no re-encoding on the way in, one copy into guest memory,
//! and the guest reads fields in place (see `docs/adr/0002-batched-invocation.md`).
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! event  := str id, str source, str type, opt subject, opt time,
//!           opt datacontenttype, opt dataschema, optb key, bytes data,
//!           u32 header-count, (str name, bytes value)*,
//!           str topic, u32 partition, u64 offset
//! str    := u32 len, len bytes of UTF-8        bytes := u32 len, len bytes
//! opt    := u32 len | 0xFFFF_FFFF for "absent" (same for optb)
//! batch  := u32 count, (u32 len, event)*
//! ```
//!
//! ```
//! use sluice_wire::{EventRef, Headers};
//! let event = EventRef {
//!     id: "1", source: "/shop", ty: "order.created", subject: None, time: None,
//!     datacontenttype: Some("application/json"), dataschema: None,
//!     key: Some(b"c1"), data: br#"{"amount":5}"#, headers: Headers::empty(),
//!     topic: "orders", partition: 0, offset: 7,
//! };
//! let frame = event.encode();
//! let back = EventRef::decode(&frame).unwrap();
//! assert_eq!(back.id, "1");
//! assert_eq!(back.offset, 7);
//! ```

use std::fmt;

const ABSENT: u32 = u32::MAX;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The field being read when decoding failed.
    pub field: &'static str,
    /// What was wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad event frame at field `{}`: {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for DecodeError {}

/// An event's transport headers, either still encoded in a frame or as a slice of
/// owned pairs (as delivered through the component-model `event` record).
#[derive(Clone, Copy)]
pub enum Headers<'a> {
    /// `count` encoded `(name, value)` pairs.
    Wire { count: u32, bytes: &'a [u8] },
    /// Already decoded pairs.
    List(&'a [(String, Vec<u8>)]),
}

impl<'a> Headers<'a> {
    /// No headers.
    pub const fn empty() -> Self {
        Headers::List(&[])
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        match self {
            Headers::Wire { count, .. } => *count as usize,
            Headers::List(l) => l.len(),
        }
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Iterate over `(name, value)` pairs in order.
    pub fn iter(&self) -> HeaderIter<'a> {
        match *self {
            Headers::Wire { count, bytes } => HeaderIter::Wire {
                left: count,
                reader: Reader { buf: bytes },
            },
            Headers::List(l) => HeaderIter::List(l.iter()),
        }
    }

    /// The first header named `name` (ASCII case-insensitive), if any.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over [`Headers`].
pub enum HeaderIter<'a> {
    #[doc(hidden)]
    Wire { left: u32, reader: Reader<'a> },
    #[doc(hidden)]
    List(std::slice::Iter<'a, (String, Vec<u8>)>),
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            HeaderIter::Wire { left, reader } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                // The frame was validated when decoded, so these cannot fail.
                let n = reader.str("header name").ok()?;
                let v = reader.bytes("header value").ok()?;
                Some((n, v))
            }
            HeaderIter::List(it) => it.next().map(|(n, v)| (n.as_str(), v.as_slice())),
        }
    }
}

/// A borrowed view of one event (CloudEvents 1.0 attributes, payload, transport
/// position).
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    /// CloudEvents `id`; with `source`, the idempotency key.
    pub id: &'a str,
    /// CloudEvents `source`.
    pub source: &'a str,
    /// CloudEvents `type`.
    pub ty: &'a str,
    /// CloudEvents `subject`.
    pub subject: Option<&'a str>,
    /// CloudEvents `time` (RFC 3339).
    pub time: Option<&'a str>,
    /// CloudEvents `datacontenttype`.
    pub datacontenttype: Option<&'a str>,
    /// CloudEvents `dataschema`.
    pub dataschema: Option<&'a str>,
    /// Partition key.
    pub key: Option<&'a [u8]>,
    /// Payload.
    pub data: &'a [u8],
    /// Remaining transport headers (`traceparent` included).
    pub headers: Headers<'a>,
    /// Topic the event was read from.
    pub topic: &'a str,
    /// Partition the event was read from.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
}

#[doc(hidden)]
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError {
                field,
                reason: "frame ends early",
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(field)?;
        self.take(n as usize, field)
    }
    fn opt_bytes(&mut self, field: &'static str) -> Result<Option<&'a [u8]>, DecodeError> {
        let n = self.u32(field)?;
        if n == ABSENT {
            return Ok(None);
        }
        self.take(n as usize, field).map(Some)
    }
    fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let b = self.bytes(field)?;
        std::str::from_utf8(b).map_err(|_| DecodeError {
            field,
            reason: "not UTF-8",
        })
    }
    fn opt_str(&mut self, field: &'static str) -> Result<Option<&'a str>, DecodeError> {
        match self.opt_bytes(field)? {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b).map(Some).map_err(|_| DecodeError {
                field,
                reason: "not UTF-8",
            }),
        }
    }
}

impl<'a> EventRef<'a> {
    /// Decode one event frame. Every length is checked; strings must be UTF-8.
    pub fn decode(frame: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { buf: frame };
        let id = r.str("id")?;
        let source = r.str("source")?;
        let ty = r.str("type")?;
        let subject = r.opt_str("subject")?;
        let time = r.opt_str("time")?;
        let datacontenttype = r.opt_str("datacontenttype")?;
        let dataschema = r.opt_str("dataschema")?;
        let key = r.opt_bytes("key")?;
        let data = r.bytes("data")?;
        let count = r.u32("headers")?;
        let start = r.buf;
        for _ in 0..count {
            r.str("header name")?;
            r.bytes("header value")?;
        }
        let used = start.len() - r.buf.len();
        let headers = Headers::Wire {
            count,
            bytes: &start[..used],
        };
        let topic = r.str("topic")?;
        let partition = r.u32("partition")?;
        let offset = r.u64("offset")?;
        if !r.buf.is_empty() {
            return Err(DecodeError {
                field: "offset",
                reason: "trailing bytes after the event",
            });
        }
        Ok(EventRef {
            id,
            source,
            ty,
            subject,
            time,
            datacontenttype,
            dataschema,
            key,
            data,
            headers,
            topic,
            partition,
            offset,
        })
    }

    /// Encode this event as a frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out);
        out
    }

    fn encoded_len_hint(&self) -> usize {
        64 + self.id.len()
            + self.source.len()
            + self.ty.len()
            + self.data.len()
            + self.topic.len()
            + self.key.map_or(0, <[u8]>::len)
    }

    /// Append this event's frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.id.as_bytes());
        put_bytes(out, self.source.as_bytes());
        put_bytes(out, self.ty.as_bytes());
        put_opt(out, self.subject.map(str::as_bytes));
        put_opt(out, self.time.map(str::as_bytes));
        put_opt(out, self.datacontenttype.map(str::as_bytes));
        put_opt(out, self.dataschema.map(str::as_bytes));
        put_opt(out, self.key);
        put_bytes(out, self.data);
        out.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
        for (n, v) in self.headers.iter() {
            put_bytes(out, n.as_bytes());
            put_bytes(out, v);
        }
        put_bytes(out, self.topic.as_bytes());
        out.extend_from_slice(&self.partition.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_opt(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.extend_from_slice(&ABSENT.to_le_bytes()),
        Some(b) => put_bytes(out, b),
    }
}

/// An event with owned fields, for building events (host ingest, tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct OwnedEvent {
    pub id: String,
    pub source: String,
    pub ty: String,
    pub subject: Option<String>,
    pub time: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    pub key: Option<Vec<u8>>,
    pub data: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

impl OwnedEvent {
    /// Borrow as an [`EventRef`].
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            id: &self.id,
            source: &self.source,
            ty: &self.ty,
            subject: self.subject.as_deref(),
            time: self.time.as_deref(),
            datacontenttype: self.datacontenttype.as_deref(),
            dataschema: self.dataschema.as_deref(),
            key: self.key.as_deref(),
            data: &self.data,
            headers: Headers::List(&self.headers),
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

impl EventRef<'_> {
    /// Copy into an [`OwnedEvent`].
    pub fn to_owned_event(&self) -> OwnedEvent {
        OwnedEvent {
            id: self.id.to_owned(),
            source: self.source.to_owned(),
            ty: self.ty.to_owned(),
            subject: self.subject.map(str::to_owned),
            time: self.time.map(str::to_owned),
            datacontenttype: self.datacontenttype.map(str::to_owned),
            dataschema: self.dataschema.map(str::to_owned),
            key: self.key.map(<[u8]>::to_vec),
            data: self.data.to_vec(),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (n.to_owned(), v.to_vec()))
                .collect(),
            topic: self.topic.to_owned(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// Builds a batch: a count followed by length-prefixed event frames.
#[derive(Default)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: u32,
}

impl BatchWriter {
    /// An empty batch.
    pub fn new() -> Self {
        BatchWriter {
            buf: vec![0; 4],
            count: 0,
        }
    }

    /// Append an already-encoded event frame.
    pub fn push_frame(&mut self, frame: &[u8]) {
        put_bytes(&mut self.buf, frame);
        self.count += 1;
    }

    /// Number of events in the batch.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished batch bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }

    /// Reset to an empty batch, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.truncate(0);
        self.buf.extend_from_slice(&[0; 4]);
        self.count = 0;
    }

    /// The batch bytes so far (count patched in).
    pub fn as_bytes(&mut self) -> &[u8] {
        let c = self.count.to_le_bytes();
        self.buf[..4].copy_from_slice(&c);
        &self.buf
    }
}

/// Iterate over the event frames of a batch.
pub fn batch_frames(batch: &[u8]) -> Result<std::vec::IntoIter<&[u8]>, DecodeError> {
    let mut r = Reader { buf: batch };
    let count = r.u32("batch count")?;
    // The count is untrusted: every frame takes at least its 4-byte length.
    let mut frames = Vec::with_capacity((count as usize).min(batch.len() / 4));
    for _ in 0..count {
        frames.push(r.bytes("batch frame")?);
    }
    Ok(frames.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(headers: &'a [(String, Vec<u8>)]) -> EventRef<'a> {
        EventRef {
            id: "e-1",
            source: "/test",
            ty: "order.created",
            subject: Some("s"),
            time: None,
            datacontenttype: Some("application/json"),
            dataschema: None,
            key: Some(b"k"),
            data: b"{}",
            headers: Headers::List(headers),
            topic: "orders",
            partition: 2,
            offset: 99,
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let h = vec![("traceparent".to_string(), b"00-abc".to_vec())];
        let e = sample(&h);
        let f = e.encode();
        let d = EventRef::decode(&f).unwrap();
        assert_eq!(d.id, "e-1");
        assert_eq!(d.subject, Some("s"));
        assert_eq!(d.time, None);
        assert_eq!(d.key, Some(&b"k"[..]));
        assert_eq!(d.headers.get("TRACEPARENT"), Some(&b"00-abc"[..]));
        assert_eq!((d.topic, d.partition, d.offset), ("orders", 2, 99));
        assert_eq!(d.encode(), f);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let h = vec![("a".to_string(), b"b".to_vec())];
        let f = sample(&h).encode();
        for cut in 0..f.len() {
            assert!(EventRef::decode(&f[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn huge_batch_count_is_an_error_not_an_abort() {
        // Found by tests/fuzz_inputs.rs: the count was used as a capacity.
        let b = [0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0];
        assert!(batch_frames(&b).is_err());
    }

    #[test]
    fn batch_round_trip() {
        let e = sample(&[]);
        let mut w = BatchWriter::new();
        w.push_frame(&e.encode());
        w.push_frame(&e.encode());
        let b = w.finish();
        let frames: Vec<_> = batch_frames(&b).unwrap().collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(EventRef::decode(frames[1]).unwrap().offset, 99);
    }
}
