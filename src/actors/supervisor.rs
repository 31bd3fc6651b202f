//! The supervisor: watches RedisInstances and their objects, keeps one instance actor per
//! instance, routes events to it, and respawns a failed actor with backoff. An actor at rest
//! hibernates (see [`super::children`]); the next event for its instance starts a new one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::EventPoster;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{error, info, warn};

use super::children::Children;
use super::instance::{
    Arrival, InstanceArgs, InstanceMsg, RedisInstanceActor, Snapshots, Stores, Timings,
};
use super::metrics::{InstanceKey, MetricsMsg};
use super::routing::{Route, Router};
use crate::api_traffic::ApiTraffic;
use crate::crd::RedisInstance;
use crate::health::Health;
use crate::kube_io::InstanceApi;
use crate::limiter::Limiter;
use crate::stages::{self, Stage};
use crate::telemetry::LogBuffers;

/// How long a stopping operator waits for the Events its last steps told: longer than one
/// Event's retries, well within the pod's termination grace period with the steps' own wait.
const EVENTS_DRAIN: Duration = Duration::from_secs(5);

/// Everything the supervisor is started with.
pub struct SupervisorArgs {
    /// API client of the watches.
    pub client: Client,
    /// API client of the writes and Events, whose requests time out within the fence's margin.
    pub writer: Client,
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    /// The metrics actor.
    pub metrics: ActorRef<MetricsMsg>,
    /// Shared view for the HTTP side.
    pub snapshots: Snapshots,
    /// Passed to every instance actor.
    pub timings: Timings,
    /// What `/readyz` and `/healthz` report.
    pub health: Arc<Health>,
    /// Identity on published Events.
    pub reporter: Reporter,
    /// Shared by every instance's writes.
    pub limiter: Limiter,
    /// Changes when writing is allowed again after the Lease lapsed.
    pub regained: tokio::sync::watch::Receiver<u64>,
    /// Counts watch events.
    pub traffic: ApiTraffic,
    /// Opened for each instance with an actor, closed when it is deleted.
    pub logs: LogBuffers,
    /// Start acting at once; otherwise only fill the caches until [`SupervisorMsg::Lead`], so
    /// that a standby that takes over has them warm instead of waiting for a full relist.
    pub leading: bool,
}

/// Messages the supervisor handles; the watch tasks send the first two.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// An event from the RedisInstance watcher, and when the watch delivered it.
    Instance(Box<watcher::Event<RedisInstance>>, Instant),
    /// An object labelled with this instance changed or was deleted (already in the caches),
    /// and when the watch delivered it.
    Owned(InstanceKey, Instant),
    /// Every instance takes a step: a watch of owned objects re-listed (its cache was replaced
    /// as a whole), or writing became allowed again after the Lease lapsed.
    WakeAll,
    /// A Secret changed or was deleted: every instance that references it takes a step.
    Secret(InstanceKey),
    /// Try again to start the actor of an instance whose actor failed.
    Respawn(InstanceKey),
    /// This process now holds the leader Lease: start acting on every instance.
    Lead,
    /// An instance actor at rest offers to hibernate, having handled `handled` messages.
    AtRest {
        /// Its instance.
        key: InstanceKey,
        /// The actor.
        actor: ActorId,
        /// How many of the supervisor's messages it handled.
        handled: u64,
    },
}

/// The supervisor's memory.
pub struct SupervisorState {
    args: SupervisorArgs,
    /// The instance actors, running and hibernating.
    children: Children<ActorRef<InstanceMsg>>,
    /// The instances known, and what of each last started a step.
    router: Router,
    stores: Arc<Stores>,
    /// Publishes every instance's Events.
    events: EventPoster,
    watch_tasks: Vec<JoinHandle<()>>,
    /// Whether instance actors may run: false on a standby, whose watches only fill caches.
    leading: bool,
}

/// See the module docs.
pub struct SupervisorActor;

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (stores, mut watch_tasks) = super::watches::start(
            &myself,
            &args.client,
            args.namespace.as_deref(),
            args.health.clone(),
            args.traffic.clone(),
        );
        // Steps refused while the Lease lapsed (an API outage) are taken again at once.
        let mut regained = args.regained.clone();
        let me = myself.clone();
        watch_tasks.push(ractor::concurrency::spawn(async move {
            while regained.changed().await.is_ok() {
                if me.send_message(SupervisorMsg::WakeAll).is_err() {
                    return;
                }
            }
        }));
        let events = EventPoster::new(args.writer.clone(), args.reporter.clone());
        Ok(SupervisorState {
            leading: args.leading,
            events,
            args,
            children: Children::default(),
            router: Router::default(),
            stores: Arc::new(stores),
            watch_tasks,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Instance(event, received) => {
                on_instance_event(&myself, state, *event, received).await;
                stages::since(Stage::Route, received);
            }
            SupervisorMsg::Owned(key, received) => {
                if state.children.hibernates(&key) {
                    ensure_actor(&myself, state, &key, Some(received)).await;
                } else {
                    let msg = InstanceMsg::Routed(Arrival::from(received));
                    state.children.send(&key, msg);
                }
                stages::since(Stage::Route, received);
            }
            SupervisorMsg::Secret(secret) => {
                for instance in state.stores.instances.state() {
                    if instance.namespace().as_deref() == Some(secret.namespace.as_str())
                        && crate::auth::referenced_secrets(&instance).contains(&secret.name)
                    {
                        let key = InstanceKey {
                            namespace: secret.namespace.clone(),
                            name: instance.name_any(),
                        };
                        wake(&myself, state, &key).await;
                    }
                }
            }
            SupervisorMsg::WakeAll => {
                // Hibernating actors too: a relisted cache may hold a change no event told.
                for key in state.children.running() {
                    state.children.send(&key, InstanceMsg::Changed);
                }
                for key in state.children.hibernating() {
                    ensure_actor(&myself, state, &key, None).await;
                }
            }
            SupervisorMsg::Respawn(key) => {
                if state.router.knows(&key) {
                    ensure_actor(&myself, state, &key, None).await;
                }
            }
            SupervisorMsg::Lead => {
                state.leading = true;
                let keys = state.router.keys();
                info!(
                    instances = keys.len(),
                    "leading: acting on every instance from the warm caches"
                );
                for key in keys {
                    ensure_actor(&myself, state, &key, None).await;
                }
            }
            SupervisorMsg::AtRest {
                key,
                actor,
                handled,
            } => {
                if let Some(actor) = state.children.offered(&key, &actor, handled) {
                    info!(namespace = %key.namespace, instance = %key.name, "instance actor hibernating");
                    actor.stop(Some("hibernating".into()));
                    count_hibernated(state);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Overridden because the default stops the supervisor whenever any child ends.
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(key) = state.children.ended(&cell.get_id()) {
                    state.children.remove_if_current(&key, &cell.get_id());
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some((key, delay)) = state.children.failed(&cell.get_id()) else {
                    return Ok(());
                };
                error!(namespace = %key.namespace, instance = %key.name, error = %err,
                    respawn_in_secs = delay.as_secs(), "instance actor failed");
                if state.router.knows(&key) {
                    myself.send_after(delay, move || SupervisorMsg::Respawn(key));
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for task in state.watch_tasks.drain(..) {
            task.abort();
        }
        // Each child finishes the step it is in (every step is a safe point), then stops.
        myself
            .stop_children_and_wait(
                Some("operator shutting down".into()),
                Some(Duration::from_secs(20)),
            )
            .await;
        // What the last steps told is still on its way: an upgrade or a move of the operator
        // must not lose it.
        let left = state.events.drained(EVENTS_DRAIN).await;
        if left > 0 {
            warn!(left, "stopped with Events still being posted");
        }
        Ok(())
    }
}

async fn on_instance_event(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    event: watcher::Event<RedisInstance>,
    received: Instant,
) {
    for route in state.router.route(&event) {
        match route {
            Route::Step(key) => ensure_actor(myself, state, &key, Some(received)).await,
            // A hibernating actor needs none: a new one reads the status from the cache.
            Route::StatusSeen(key) => {
                state.children.send(&key, InstanceMsg::StatusSeen);
            }
            Route::Forget(key) => forget(state, &key),
        }
    }
    if matches!(event, watcher::Event::InitDone) && state.args.health.set_synced() {
        info!(
            instances = state.router.len(),
            "initial list of RedisInstances routed"
        );
    }
}

/// Starts the instance's actor if it has none, and wakes it (with when the watch delivered the
/// event behind it, if one is); a standby starts none.
async fn ensure_actor(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    key: &InstanceKey,
    received: Option<Instant>,
) {
    if !state.leading {
        return;
    }
    if !state.children.runs(key) {
        state.args.logs.open(key);
        let args = InstanceArgs {
            key: key.clone(),
            api: InstanceApi::new(
                state.args.writer.clone(),
                &key.namespace,
                state.events.clone(),
                state.args.limiter.clone(),
            ),
            stores: state.stores.clone(),
            metrics: state.args.metrics.clone(),
            snapshots: state.args.snapshots.clone(),
            timings: state.args.timings,
            supervisor: Some(myself.clone()),
        };
        match Actor::spawn_linked(None, RedisInstanceActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                let woken = state.children.started(key, actor);
                info!(namespace = %key.namespace, instance = %key.name, woken, "instance actor started");
                if woken {
                    count_hibernated(state);
                }
            }
            Err(err) => {
                warn!(namespace = %key.namespace, instance = %key.name, error = %err, "failed to start instance actor; retrying");
                let key = key.clone();
                myself.send_after(Duration::from_secs(1), move || SupervisorMsg::Respawn(key));
                return;
            }
        }
    }
    let msg = match received {
        Some(received) => InstanceMsg::Routed(Arrival::from(received)),
        None => InstanceMsg::Changed,
    };
    state.children.send(key, msg);
}

/// Wakes `key`'s actor, starting one if it hibernates.
async fn wake(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, key: &InstanceKey) {
    if state.children.hibernates(key) {
        ensure_actor(myself, state, key, None).await;
    } else {
        state.children.send(key, InstanceMsg::Changed);
    }
}

/// Publishes how many actors hibernate.
fn count_hibernated(state: &SupervisorState) {
    let hibernated = state.children.hibernated();
    let _ = state
        .args
        .metrics
        .send_message(MetricsMsg::Hibernated(hibernated));
}

/// The instance is gone: stop its actor (owned objects go with the garbage collector).
fn forget(state: &mut SupervisorState, key: &InstanceKey) {
    state.args.snapshots.remove(key);
    let _ = state
        .args
        .metrics
        .send_message(MetricsMsg::Forget(key.clone()));
    let hibernated = state.children.hibernates(key);
    if let Some(actor) = state.children.forget(key) {
        info!(namespace = %key.namespace, instance = %key.name, "instance deleted; stopping its actor");
        actor.stop(Some("instance deleted".into()));
    }
    if hibernated {
        count_hibernated(state);
    }
    state.args.logs.close(key);
}
