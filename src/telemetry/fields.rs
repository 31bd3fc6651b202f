//! Span and event fields as JSON values, so every line can carry its span's fields at top level.

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, Scope};

/// A span's fields, kept in its extensions by [`SpanFieldsLayer`]: a list, not a map, since an
/// instance actor's span lives as long as the actor and a JSON map's smallest node takes 600
/// bytes where two fields take 112.
pub(crate) struct SpanFields(pub Vec<(&'static str, Value)>);

/// Where [`JsonVisitor`] writes a field: a line's JSON map, or a span's list.
pub(crate) trait FieldSink {
    /// Sets `name` to `value`, replacing what it held.
    fn put(&mut self, name: &'static str, value: Value);
}

impl FieldSink for Map<String, Value> {
    fn put(&mut self, name: &'static str, value: Value) {
        self.insert(name.into(), value);
    }
}

impl FieldSink for SpanFields {
    fn put(&mut self, name: &'static str, value: Value) {
        match self.0.iter_mut().find(|(held, _)| *held == name) {
            Some((_, held)) => *held = value,
            None => self.0.push((name, value)),
        }
    }
}

/// Writes fields as JSON values into a [`FieldSink`]; `message` keeps its name.
pub(crate) struct JsonVisitor<'a, S>(pub &'a mut S);

impl<S: FieldSink> Visit for JsonVisitor<'_, S> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.put(field.name(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.put(field.name(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.put(field.name(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.put(field.name(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.put(field.name(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.put(field.name(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.put(field.name(), format!("{value:?}").into());
    }
}

/// Records the fields of the operator's own spans as JSON when a span is created or recorded
/// into. Spans of libraries (the actor framework's `id` and `name`, say) stay out of the lines.
pub(crate) struct SpanFieldsLayer;

impl<S> Layer<S> for SpanFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !attrs.metadata().target().starts_with("redis_operator") {
            return;
        }
        let mut fields = SpanFields(Vec::new());
        attrs.record(&mut JsonVisitor(&mut fields));
        fields.0.shrink_to_fit();
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonVisitor(fields));
        }
    }
}

/// One log line as a JSON object: time, level, target, the fields of every span it is in
/// (outermost first), then its own fields (`message` among them).
pub(crate) fn line_of<'a, S>(event: &Event<'_>, scope: Option<Scope<'a, S>>) -> Map<String, Value>
where
    S: LookupSpan<'a>,
{
    let mut line = Map::new();
    line.insert(
        "timestamp".into(),
        k8s_openapi::jiff::Timestamp::now().to_string().into(),
    );
    line.insert("level".into(), event.metadata().level().as_str().into());
    line.insert("target".into(), event.metadata().target().into());
    for span in scope.into_iter().flat_map(Scope::from_root) {
        if let Some(fields) = span.extensions().get::<SpanFields>() {
            line.extend(fields.0.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        }
    }
    event.record(&mut JsonVisitor(&mut line));
    line
}
