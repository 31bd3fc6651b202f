//! How a line is written: one JSON object, or text for people; both with the span fields.

use std::fmt::{self, Write as _};

use serde_json::Value;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::LogFormat;
use super::fields::line_of;

/// Formats every line the same way the per-instance buffers store it.
pub(crate) struct Lines(pub LogFormat);

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let line = line_of(event, ctx.event_scope());
        match self.0 {
            LogFormat::Json => writeln!(writer, "{}", Value::Object(line)),
            LogFormat::Text => writeln!(writer, "{}", text_of(&line)),
        }
    }
}

/// `TIME LEVEL message key=value ...`, for people.
pub fn text_of(line: &serde_json::Map<String, Value>) -> String {
    let field = |key: &str| match line.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let mut text = format!(
        "{} {:>5} {}",
        field("timestamp"),
        field("level"),
        field("message")
    );
    for (key, value) in line {
        if matches!(key.as_str(), "timestamp" | "level" | "message" | "target") {
            continue;
        }
        let _ = match value {
            Value::String(s) => write!(text, " {key}={s}"),
            other => write!(text, " {key}={other}"),
        };
    }
    text
}
