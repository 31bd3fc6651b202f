//! The recent log lines of each instance, kept in a bounded ring while the instance exists, and
//! handed to followers as they are written: what `GET /logs/{namespace}/{name}` serves.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tokio::sync::broadcast;
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::fields::line_of;
use crate::actors::metrics::InstanceKey;

/// Lines kept per instance; older ones are dropped.
pub const LINES_PER_INSTANCE: usize = 1000;

/// Bytes of log lines kept for all instances together, each line counted with its
/// [`LINE_OVERHEAD`]: each ring keeps at most its share (this divided by the number of
/// instances) and always its newest line. At 10,000 instances a share is 1.7 KB: 6 lines of
/// the 220 bytes (p50) a cold start writes, where a default instance's creation writes about
/// ten; at 1,000, 16.8 KB (about 60 lines).
pub const BYTES_FOR_ALL: usize = 16 << 20;

/// How far past [`BYTES_FOR_ALL`] the rings may go together before the next line trims every
/// ring to its share: rings filled while the fleet was smaller hold a larger, older share,
/// which a ring gives up by itself only when it next gets a line. Sweeping at most once per
/// this many bytes keeps the sweeps' cost (a lock per ring) off most lines.
pub const SWEEP_SLACK: usize = BYTES_FOR_ALL / 16;

/// What a kept line costs beside its text: its slot in the ring (time and pointer, 32 bytes)
/// and its shared allocation's counts (16 bytes).
pub const LINE_OVERHEAD: usize = 48;

/// The bytes a kept line counts for against its ring's share.
fn cost(line: &str) -> usize {
    line.len() + LINE_OVERHEAD
}

/// One instance's recent lines, and the channel its followers listen on (made on the first
/// follow: most instances are never followed, and an idle channel holds all its slots).
pub struct Ring {
    inner: Mutex<RingInner>,
}

struct RingInner {
    lines: VecDeque<(Timestamp, Arc<str>)>,
    bytes: usize,
    follow: Option<broadcast::Sender<Arc<str>>>,
    /// Its instance is gone: a line logged about it after that is not kept.
    closed: bool,
}

impl RingInner {
    /// Drops the oldest lines past [`LINES_PER_INSTANCE`] or `share` bytes, keeping the
    /// newest, and takes them off `kept`.
    fn trim(&mut self, share: usize, kept: &AtomicUsize) {
        while self.lines.len() > 1 && (self.lines.len() > LINES_PER_INSTANCE || self.bytes > share)
        {
            if let Some((_, old)) = self.lines.pop_front() {
                self.bytes -= cost(&old);
                kept.fetch_sub(cost(&old), Ordering::Relaxed);
            }
        }
    }
}

/// Lines a follower may fall behind by before it is told some were skipped.
const FOLLOW_BACKLOG: usize = 256;

impl Ring {
    fn new() -> Self {
        Self {
            inner: Mutex::new(RingInner {
                lines: VecDeque::new(),
                bytes: 0,
                follow: None,
                closed: false,
            }),
        }
    }

    /// Keeps `line`, dropping the oldest lines past [`LINES_PER_INSTANCE`] or `share` bytes.
    /// `kept` counts the bytes of every ring: a ring changes it only under its own lock, by what
    /// it keeps and drops, so it never counts less than the rings hold.
    fn push(&self, at: Timestamp, line: Arc<str>, share: usize, kept: &AtomicUsize) {
        let mut inner = self.inner.lock().expect("log ring lock");
        if inner.closed {
            return;
        }
        inner.bytes += cost(&line);
        kept.fetch_add(cost(&line), Ordering::Relaxed);
        inner.lines.push_back((at, line.clone()));
        inner.trim(share, kept);
        if let Some(follow) = &inner.follow
            && follow.send(line).is_err()
        {
            // Every follower is gone.
            inner.follow = None;
        }
    }

    /// Drops the oldest lines past `share` bytes (see [`Ring::push`] for `kept`).
    fn trim(&self, share: usize, kept: &AtomicUsize) {
        self.inner.lock().expect("log ring lock").trim(share, kept);
    }

    /// Keeps nothing more, and frees what it kept (see [`Ring::push`] for `kept`).
    fn close(&self, kept: &AtomicUsize) {
        let mut inner = self.inner.lock().expect("log ring lock");
        inner.closed = true;
        inner.lines = VecDeque::new();
        kept.fetch_sub(std::mem::take(&mut inner.bytes), Ordering::Relaxed);
    }

    /// The kept lines written at or after `since`, and a receiver of the lines written after
    /// them (taken under one lock, so none is lost or told twice).
    pub fn read(&self, since: Option<Timestamp>) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let mut inner = self.inner.lock().expect("log ring lock");
        let kept = inner
            .lines
            .iter()
            .filter(|(at, _)| since.is_none_or(|s| *at >= s))
            .map(|(_, line)| line.clone())
            .collect();
        let follow = inner
            .follow
            .get_or_insert_with(|| broadcast::channel(FOLLOW_BACKLOG).0);
        (kept, follow.subscribe())
    }
}

/// Every instance's ring. Lines are kept only for instances that are [`LogBuffers::open`]: a
/// line logged about a deleted instance does not bring its buffer back.
#[derive(Clone)]
pub struct LogBuffers {
    rings: Arc<DashMap<InstanceKey, Arc<Ring>>>,
    /// Bytes kept by every ring together.
    kept: Arc<AtomicUsize>,
    /// Past this many bytes kept, the next line trims every ring to its share.
    sweep_above: Arc<AtomicUsize>,
}

impl Default for LogBuffers {
    fn default() -> Self {
        Self {
            rings: Arc::default(),
            kept: Arc::default(),
            sweep_above: Arc::new(AtomicUsize::new(BYTES_FOR_ALL + SWEEP_SLACK)),
        }
    }
}

impl std::fmt::Debug for LogBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogBuffers({} instances)", self.rings.len())
    }
}

impl LogBuffers {
    /// Starts keeping lines of `key`.
    pub fn open(&self, key: &InstanceKey) {
        self.rings
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Ring::new()));
    }

    /// Frees `key`'s lines; its followers' streams end.
    pub fn close(&self, key: &InstanceKey) {
        if let Some((_, ring)) = self.rings.remove(key) {
            ring.close(&self.kept);
        }
    }

    /// Keeps `line` in `ring`, then trims every ring to its share if together they keep more
    /// than [`BYTES_FOR_ALL`] and [`SWEEP_SLACK`] (see there).
    fn keep(&self, ring: &Ring, line: Arc<str>) {
        ring.push(Timestamp::now(), line, self.share(), &self.kept);
        let above = self.sweep_above.load(Ordering::Relaxed);
        if self.kept.load(Ordering::Relaxed) <= above {
            return;
        }
        // One line sweeps; the others logged meanwhile go on.
        let sweeping = self.sweep_above.compare_exchange(
            above,
            usize::MAX,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        if sweeping.is_err() {
            return;
        }
        let share = self.share();
        for ring in self.rings.iter() {
            ring.trim(share, &self.kept);
        }
        // Newest lines larger than their share stay: the next sweep waits for more than them.
        let kept = self.kept.load(Ordering::Relaxed);
        self.sweep_above.store(
            kept.max(BYTES_FOR_ALL).saturating_add(SWEEP_SLACK),
            Ordering::Relaxed,
        );
    }

    /// Bytes kept by every ring together, each line counted with its [`LINE_OVERHEAD`].
    #[cfg(test)]
    fn kept_bytes(&self) -> usize {
        self.kept.load(Ordering::Relaxed)
    }

    /// `key`'s ring, if its instance exists.
    pub fn ring(&self, key: &InstanceKey) -> Option<Arc<Ring>> {
        self.rings.get(key).map(|r| r.clone())
    }

    /// The bytes each ring may keep now.
    fn share(&self) -> usize {
        BYTES_FOR_ALL / self.rings.len().max(1)
    }

    /// Instances with a buffer.
    pub fn len(&self) -> usize {
        self.rings.len()
    }

    /// No instance has a buffer.
    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }
}

/// Copies each line that carries `namespace` and `instance` (from its span or its own fields)
/// into that instance's ring, as the same JSON the log output holds.
impl<S> Layer<S> for LogBuffers
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if self.rings.is_empty() {
            return;
        }
        let line = line_of(event, ctx.event_scope(event));
        let (Some(Value::String(namespace)), Some(Value::String(name))) =
            (line.get("namespace"), line.get("instance"))
        else {
            return;
        };
        let key = InstanceKey {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        if let Some(ring) = self.ring(&key) {
            let text: Arc<str> = Value::Object(line).to_string().into();
            self.keep(&ring, text);
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::telemetry::fields::SpanFieldsLayer;

    fn key(name: &str) -> InstanceKey {
        InstanceKey {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn lines(buffers: &LogBuffers, name: &str) -> Vec<Value> {
        let (kept, _) = buffers.ring(&key(name)).unwrap().read(None);
        kept.iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn lines_go_to_the_instance_of_their_span_and_only_while_it_exists() {
        let buffers = LogBuffers::default();
        buffers.open(&key("a"));
        buffers.open(&key("b"));
        let subscriber = tracing_subscriber::registry()
            .with(SpanFieldsLayer)
            .with(buffers.clone());
        tracing::subscriber::with_default(subscriber, || {
            let a = tracing::error_span!("instance", namespace = "ns", instance = "a");
            a.in_scope(|| tracing::info!(old_hash = "1", "Config hash comparison"));
            tracing::info!(namespace = "ns", instance = "b", "instance actor started");
            tracing::info!("a line about no instance");
            buffers.close(&key("a"));
            a.in_scope(|| tracing::info!("after the instance was deleted"));
        });
        assert!(buffers.ring(&key("a")).is_none());
        let b = lines(&buffers, "b");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0]["message"], "instance actor started");
        assert_eq!(buffers.len(), 1);
    }

    #[test]
    fn a_ring_keeps_the_newest_lines_and_tells_followers() {
        let ring = Ring::new();
        let kept_here = AtomicUsize::new(0);
        let (_, mut follower) = ring.read(None);
        for n in 0..LINES_PER_INSTANCE + 5 {
            ring.push(
                Timestamp::now(),
                n.to_string().into(),
                BYTES_FOR_ALL,
                &kept_here,
            );
            if n == 0 {
                assert_eq!(&*follower.try_recv().unwrap(), "0");
            }
        }
        let (kept, _) = ring.read(None);
        assert_eq!(kept.len(), LINES_PER_INSTANCE);
        assert_eq!(&*kept[0], "5");
        let later = Timestamp::now() + std::time::Duration::from_secs(60);
        assert!(ring.read(Some(later)).0.is_empty());
    }

    #[test]
    fn all_rings_together_keep_at_most_the_global_budget() {
        let buffers = LogBuffers::default();
        let count = 10_000;
        for n in 0..count {
            buffers.open(&key(&n.to_string()));
        }
        let line: Arc<str> = "x".repeat(270).into();
        for n in 0..count {
            let ring = buffers.ring(&key(&n.to_string())).unwrap();
            for _ in 0..100 {
                buffers.keep(&ring, line.clone());
            }
        }
        let kept: usize = (0..count)
            .map(|n| {
                buffers
                    .ring(&key(&n.to_string()))
                    .unwrap()
                    .read(None)
                    .0
                    .len()
            })
            .sum();
        assert!(
            kept * cost(&line) <= BYTES_FOR_ALL,
            "{kept} lines of {} bytes",
            line.len()
        );
        assert_eq!(
            kept / count,
            BYTES_FOR_ALL / count / cost(&line),
            "an equal share each"
        );
        let one = buffers.ring(&key("0")).unwrap();
        buffers.keep(&one, "y".repeat(BYTES_FOR_ALL).into());
        assert_eq!(
            one.read(None).0.len(),
            1,
            "the newest line stays, whatever its size"
        );
    }

    #[test]
    fn rings_filled_before_the_fleet_grew_give_up_their_share_within_the_slack() {
        let buffers = LogBuffers::default();
        let line: Arc<str> = "x".repeat(1700).into();
        let fill = |from: usize, to: usize| {
            for n in from..to {
                buffers.open(&key(&n.to_string()));
            }
            for n in from..to {
                let ring = buffers.ring(&key(&n.to_string())).unwrap();
                for _ in 0..LINES_PER_INSTANCE {
                    buffers.keep(&ring, line.clone());
                }
            }
        };
        // Ten rings, each at its share of a tenth.
        fill(0, 10);
        let full = buffers.kept_bytes();
        assert!(full > BYTES_FOR_ALL - 10 * cost(&line) && full <= BYTES_FOR_ALL);
        // Ten more, filled to their share of a twentieth while the first ten get no line.
        fill(10, 20);
        let kept = buffers.kept_bytes();
        assert!(
            kept <= BYTES_FOR_ALL + SWEEP_SLACK,
            "{kept} bytes kept, past {BYTES_FOR_ALL} and its slack"
        );
        let first = buffers.ring(&key("0")).unwrap();
        let first_kept = first.read(None).0.len() * cost(&line);
        assert!(
            first_kept <= buffers.share(),
            "a ring filled before the fleet grew keeps {first_kept} bytes, its share is {}",
            buffers.share()
        );
        // The count follows what the rings hold, closed ones included.
        let held = |buffers: &LogBuffers| -> usize {
            (0..20)
                .filter_map(|n| buffers.ring(&key(&n.to_string())))
                .map(|ring| ring.read(None).0.len() * cost(&line))
                .sum()
        };
        assert_eq!(buffers.kept_bytes(), held(&buffers));
        buffers.close(&key("0"));
        assert_eq!(buffers.kept_bytes(), held(&buffers));
        let before = buffers.kept_bytes();
        buffers.keep(&first, line.clone());
        assert_eq!(first.read(None).0.len(), 0, "a closed ring keeps nothing");
        assert_eq!(buffers.kept_bytes(), before);
    }

    #[test]
    fn the_count_matches_what_the_rings_hold_while_lines_race_closes() {
        let buffers = LogBuffers::default();
        let names: Vec<String> = (0..8).map(|n| n.to_string()).collect();
        for name in &names {
            buffers.open(&key(name));
        }
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (buffers, names) = (&buffers, &names);
                scope.spawn(move || {
                    let line: Arc<str> = "z".repeat(100 + t).into();
                    for n in 0..20_000 {
                        if let Some(ring) = buffers.ring(&key(&names[n % names.len()])) {
                            buffers.keep(&ring, line.clone());
                        }
                    }
                });
            }
            scope.spawn(|| {
                for n in 0..2_000 {
                    let name = key(&names[n % names.len()]);
                    buffers.close(&name);
                    buffers.open(&name);
                }
            });
        });
        let held: usize = names
            .iter()
            .filter_map(|name| buffers.ring(&key(name)))
            .flat_map(|ring| ring.read(None).0)
            .map(|line| cost(&line))
            .sum();
        assert_eq!(buffers.kept_bytes(), held);
    }

    #[test]
    fn span_fields_reach_the_line_at_top_level() {
        let buffers = LogBuffers::default();
        buffers.open(&key("a"));
        let subscriber = tracing_subscriber::registry()
            .with(SpanFieldsLayer)
            .with(buffers.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::error_span!("instance", namespace = "ns", instance = "a");
            span.in_scope(|| tracing::warn!(reason = "ApplyFailed", "reconcile step failed"));
        });
        let line = &lines(&buffers, "a")[0];
        assert_eq!(line["namespace"], "ns");
        assert_eq!(line["instance"], "a");
        assert_eq!(line["reason"], "ApplyFailed");
        assert_eq!(line["level"], "WARN");
    }
}
