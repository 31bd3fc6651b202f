//! Events about an instance, each named by what it tells, so a retry or a later leader telling
//! the same thing finds it posted instead of posting it twice.
//!
//! The API server keeps one object per name: creating an Event whose name is already taken
//! answers 409. Naming an Event by its fact (a restart record, a refused config) makes telling
//! it idempotent, so the operator can tell it again whenever it is unsure it got through: after
//! an ambiguous failure, or after taking over from a leader that may have died in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::limiter::Limiter;

/// The longest Event note the API server accepts, in bytes.
pub const NOTE_MAX: usize = 1024;

/// Attempts at posting one Event before it is given up (with a warning in the log).
const ATTEMPTS: u32 = 5;

/// The wait after the first failed attempt; doubled after each.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// What makes two tellings the same Event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Occurrence {
    /// A fact the cluster records (a restart record, a refused generation): telling it again,
    /// by anyone, is the same Event, already posted.
    Fact(String),
    /// Nothing records it: the same text told again is the same Event happening again, and is
    /// counted in its series.
    Repeat,
}

/// One Event to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Told {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// Why, a fixed short string.
    pub reason: String,
    /// What the operator did, a fixed short string.
    pub action: String,
    /// The details; cut to what the API server accepts.
    pub note: String,
    /// What makes a second telling the same Event.
    pub occurrence: Occurrence,
}

/// How a telling ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// A new Event.
    Created,
    /// Already there: told before, by this operator or another.
    AlreadyPosted,
    /// The same text again: the Event's series counts it.
    Repeated,
}

/// The name of the Event `told` about the object `regarding`: the object's name (so
/// `kubectl get events` groups them) and 16 hex digits of what identifies the telling.
pub fn event_name(regarding: &ObjectReference, told: &Told) -> String {
    let mut digest = Sha256::new();
    for part in [
        regarding.uid.as_deref().unwrap_or_default(),
        if told.warning { "Warning" } else { "Normal" },
        &told.reason,
        &told.action,
    ] {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    match &told.occurrence {
        Occurrence::Fact(fact) => digest.update(format!("fact\0{fact}").as_bytes()),
        Occurrence::Repeat => digest.update(format!("text\0{}", told.note).as_bytes()),
    }
    let id = hex::encode(&digest.finalize()[..8]);
    // A name is at most 253 bytes; instance names are far shorter, but the name must not fail.
    let object = crate::text::prefix_bytes(regarding.name.as_deref().unwrap_or("object"), 200);
    format!("{object}.{id}")
}

/// The Event object for `told` about `regarding`, observed at `now`.
pub fn event_object(
    regarding: &ObjectReference,
    told: &Told,
    reporter: &Reporter,
    now: Timestamp,
) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(regarding, told)),
            namespace: regarding.namespace.clone(),
            ..ObjectMeta::default()
        },
        action: Some(told.action.clone()),
        reason: Some(told.reason.clone()),
        note: Some(crate::text::cut(&told.note, NOTE_MAX - 3)),
        type_: Some(if told.warning { "Warning" } else { "Normal" }.to_owned()),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        ..Event::default()
    }
}

/// What a failed attempt means for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The name is taken.
    Taken,
    /// Worth another attempt; `maybe_landed` when the request may have been carried out.
    Transient { maybe_landed: bool },
    /// The API server refused it for good (invalid, forbidden).
    Final,
}

fn classify(error: &kube::Error) -> Failure {
    match error {
        kube::Error::Api(status) if status.code == 409 => Failure::Taken,
        kube::Error::Api(status) if status.code == 429 => Failure::Transient {
            maybe_landed: false,
        },
        kube::Error::Api(status) if status.code >= 500 => Failure::Transient { maybe_landed: true },
        kube::Error::Api(_) => Failure::Final,
        // Connection errors and timeouts: the request may have reached the API server.
        _ => Failure::Transient { maybe_landed: true },
    }
}

/// Posts Events, each once, through the write limiter.
#[derive(Clone)]
pub struct EventPoster {
    client: Client,
    reporter: Reporter,
    /// Events being posted in the background, by every clone: a stopping operator waits for
    /// them (see [`EventPoster::drained`]).
    in_flight: Arc<AtomicUsize>,
}

/// Counts one Event posted in the background until it is dropped.
struct Posting(Arc<AtomicUsize>);

impl Drop for Posting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How often a stopping operator looks whether its Events got through.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Why an Event was not posted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This operator may no longer lead; the next leader tells what is still true.
    #[error("not the leader")]
    NotLeader,
    /// The API server refused it, or kept failing.
    #[error(transparent)]
    Api(#[from] kube::Error),
}

impl EventPoster {
    /// Posts as `reporter` through `client`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            in_flight: Arc::default(),
        }
    }

    /// Posts `told` in the background (see [`EventPoster::post`]), counted until it is done,
    /// so that an operator stopping gracefully does not drop it.
    pub fn post_in_background(
        &self,
        limiter: Limiter,
        regarding: ObjectReference,
        told: Told,
        span: tracing::Span,
    ) {
        use tracing::Instrument;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let posting = Posting(self.in_flight.clone());
        let poster = self.clone();
        tokio::spawn(
            async move {
                let _posting = posting;
                match poster.post(&limiter, &regarding, &told).await {
                    Ok(posted) => tracing::trace!(reason = %told.reason, ?posted, "event told"),
                    Err(Error::NotLeader) => {
                        tracing::debug!(reason = %told.reason, "not the leader; event not published");
                    }
                    Err(error) => {
                        tracing::warn!(%error, reason = %told.reason, "failed to publish event");
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Waits until every Event posted in the background is done, or `limit` has passed;
    /// returns how many were still being posted.
    pub async fn drained(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = self.in_flight.load(Ordering::Acquire);
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    /// Tells `told` about `regarding`, retrying transient failures a few times; each attempt
    /// passes `limiter` like any other write.
    pub async fn post(
        &self,
        limiter: &Limiter,
        regarding: &ObjectReference,
        told: &Told,
    ) -> Result<Posted, Error> {
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let event = event_object(regarding, told, &self.reporter, crate::cluster_clock::now());
        let name = event.metadata.name.clone().unwrap_or_default();
        let mut maybe_landed = false;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let permit = limiter.write("Event").await.map_err(|_| Error::NotLeader)?;
            let error = match api.create(&PostParams::default(), &event).await {
                Ok(_) => return Ok(Posted::Created),
                Err(error) => error,
            };
            drop(permit);
            match classify(&error) {
                Failure::Taken => {
                    // A taken name is this very telling when an earlier attempt may have
                    // landed; for a fact, whoever took it told the same thing.
                    if maybe_landed || matches!(told.occurrence, Occurrence::Fact(_)) {
                        return Ok(Posted::AlreadyPosted);
                    }
                    self.repeat(limiter, &api, &name).await?;
                    return Ok(Posted::Repeated);
                }
                Failure::Transient { maybe_landed: may } if attempt < ATTEMPTS => {
                    maybe_landed |= may;
                    tracing::debug!(%error, attempt, reason = %told.reason, "event not posted yet");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Failure::Transient { .. } | Failure::Final => return Err(error.into()),
            }
        }
    }

    /// Counts one more occurrence of the Event `name` in its series.
    async fn repeat(&self, limiter: &Limiter, api: &Api<Event>, name: &str) -> Result<(), Error> {
        let current = api.get(name).await?;
        let count = current.series.as_ref().map_or(1, |s| s.count) + 1;
        let series = EventSeries {
            count,
            last_observed_time: MicroTime(crate::cluster_clock::now()),
        };
        let _permit = limiter.write("Event").await.map_err(|_| Error::NotLeader)?;
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "series": series })),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(uid: &str) -> ObjectReference {
        ObjectReference {
            name: Some("cache".into()),
            namespace: Some("apps".into()),
            uid: Some(uid.into()),
            ..ObjectReference::default()
        }
    }

    fn told(note: &str, occurrence: Occurrence) -> Told {
        Told {
            warning: true,
            reason: "RolloutRolledBack".into(),
            action: "Restart".into(),
            note: note.into(),
            occurrence,
        }
    }

    #[test]
    fn a_fact_told_again_in_other_words_is_the_same_event() {
        let fact = || Occurrence::Fact("restart abc at 2026-12-05T23:00:00Z".into());
        let first = event_name(&instance("u1"), &told("pod 0 never became ready", fact()));
        let again = event_name(&instance("u1"), &told("told by the next leader", fact()));
        assert_eq!(first, again);
        assert!(first.starts_with("cache."), "{first}");
        assert_eq!(first.len(), "cache.".len() + 16);
    }

    #[test]
    fn other_facts_instances_and_texts_are_other_events() {
        let base = event_name(&instance("u1"), &told("x", Occurrence::Fact("a".into())));
        let others = [
            event_name(&instance("u1"), &told("x", Occurrence::Fact("b".into()))),
            event_name(&instance("u2"), &told("x", Occurrence::Fact("a".into()))),
            event_name(&instance("u1"), &told("x", Occurrence::Repeat)),
            event_name(&instance("u1"), &told("y", Occurrence::Repeat)),
        ];
        for other in &others {
            assert_ne!(&base, other);
        }
        assert_ne!(others[2], others[3], "a repeat is named by its text");
        let normal = Told {
            warning: false,
            ..told("x", Occurrence::Fact("a".into()))
        };
        assert_ne!(base, event_name(&instance("u1"), &normal));
    }

    #[test]
    fn a_long_note_is_cut_to_what_the_api_server_takes_on_a_character_boundary() {
        let note = "é".repeat(NOTE_MAX);
        let event = event_object(
            &instance("u1"),
            &told(&note, Occurrence::Repeat),
            &Reporter {
                controller: "redis-operator".into(),
                instance: None,
            },
            Timestamp::UNIX_EPOCH,
        );
        let cut = event.note.expect("a note");
        assert!(cut.len() <= NOTE_MAX, "{}", cut.len());
        assert!(cut.ends_with("..."));
        assert_eq!(event.reporting_instance.as_deref(), Some("redis-operator"));
    }

    #[test]
    fn only_a_taken_name_throttling_and_server_errors_are_not_final() {
        let api = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert_eq!(classify(&api(409)), Failure::Taken);
        assert_eq!(
            classify(&api(429)),
            Failure::Transient {
                maybe_landed: false
            }
        );
        assert_eq!(
            classify(&api(504)),
            Failure::Transient { maybe_landed: true }
        );
        assert_eq!(classify(&api(422)), Failure::Final);
        assert_eq!(classify(&api(403)), Failure::Final);
    }
}

#[cfg(test)]
mod api_tests;
