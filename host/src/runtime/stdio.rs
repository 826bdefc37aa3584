//! Guest stdout/stderr, captured line by line into the host's log (rate-limited).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::host::LogBucket;

/// A `StdoutStream` that writes to `tracing`, tagged with the module name.
pub struct LogStream {
    module: Arc<str>,
    stream: &'static str,
    bucket: Arc<Mutex<LogBucket>>,
}

impl LogStream {
    pub fn new(module: Arc<str>, stream: &'static str) -> Self {
        LogStream {
            module,
            stream,
            bucket: Arc::new(Mutex::new(LogBucket::new())),
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter {
            module: self.module.clone(),
            stream: self.stream,
            bucket: self.bucket.clone(),
            buf: Vec::new(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

struct LineWriter {
    module: Arc<str>,
    stream: &'static str,
    bucket: Arc<Mutex<LogBucket>>,
    buf: Vec<u8>,
}

const MAX_LINE: usize = 4096;

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let Some(dropped) = self.bucket.lock().map(|mut b| b.take()).unwrap_or(None) else {
            return;
        };
        let text = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]);
        let text = text.trim_end();
        tracing::info!(
            module = &*self.module,
            stream = self.stream,
            dropped,
            "{text}"
        );
    }
}

#[async_trait::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.buf.extend_from_slice(&bytes);
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            self.emit(&line);
        }
        if self.buf.len() > MAX_LINE {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}
