//! Leveled log lines into the host's log, tagged there with the module name and
//! the current event id. The host rate-limits them.
//!
//! ```
//! # sluice_guest::testing::TestHost::install();
//! sluice_guest::info!("order {} accepted", 42);
//! ```

use crate::backend;

/// Log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Write one log line.
pub fn log(level: Level, msg: &str) {
    backend::log(level, msg)
}

/// `info!("...", args)`: log at info level.
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Info, &format!($($t)*)) }; }
/// `warn!("...", args)`: log at warn level.
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Warn, &format!($($t)*)) }; }
/// `error!("...", args)`: log at error level.
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Error, &format!($($t)*)) }; }
/// `debug!("...", args)`: log at debug level.
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Debug, &format!($($t)*)) }; }
