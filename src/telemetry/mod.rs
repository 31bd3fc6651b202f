//! Logging: JSON lines in-cluster or text for people, every line about an instance carrying
//! its `namespace` and `instance` (from the instance actor's span), and per-instance buffers.

mod buffers;
mod fields;
mod format;

pub use buffers::{LINES_PER_INSTANCE, LogBuffers, Ring};
pub use format::text_of;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line; fields such as `namespace`, `instance`, `old_hash`, `new_hash`
    /// are top-level keys, so `jq 'select(.instance=="x")'` gives one instance's stream.
    Json,
    /// Human-readable lines.
    Text,
}

/// Failures of setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The level is not a valid filter.
    #[error("invalid --log-level {level:?}: {source}")]
    Level {
        /// What was given.
        level: String,
        /// Why it is invalid.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
}

/// Installs the global subscriber writing to stderr at `level` (a level such as `info`, or
/// filter directives such as `info,redis_operator=debug`), and returns the per-instance
/// buffers it fills.
pub fn init(format: LogFormat, level: &str) -> Result<LogBuffers, Error> {
    let filter = EnvFilter::try_new(level).map_err(|source| Error::Level {
        level: level.to_owned(),
        source,
    })?;
    let buffers = LogBuffers::default();
    let output = tracing_subscriber::fmt::layer()
        .event_format(format::Lines(format))
        .with_writer(std::io::stderr);
    tracing_subscriber::registry()
        .with(filter)
        .with(fields::SpanFieldsLayer)
        .with(buffers.clone())
        .with(output)
        .init();
    Ok(buffers)
}
