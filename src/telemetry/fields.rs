//! Span and event fields as JSON values, so every line can carry its span's fields at top level.

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, Scope};

/// A span's fields, kept in its extensions by [`SpanFieldsLayer`].
pub(crate) struct SpanFields(pub Map<String, Value>);

/// Writes fields into a JSON map; `message` keeps its name.
pub(crate) struct JsonVisitor<'a>(pub &'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
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
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonVisitor(&mut fields.0));
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
            line.extend(fields.0.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    event.record(&mut JsonVisitor(&mut line));
    line
}
