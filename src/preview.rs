//! `redis-operator diff`: what applying a RedisInstance would do to the running pods, asked of
//! the operator's own decision function, without writing anything.

use std::fmt;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client, ResourceExt};

use k8s_openapi::api::apps::v1::StatefulSetStatus;
use k8s_openapi::jiff::Timestamp;

use crate::config::render::{CONFIG_FILE_KEY, render, short_hash};
use crate::config::validate::Violation;
use crate::crd::{ConfigUpdate, RedisInstance, RestartReason, RestartStrategy};
use crate::decide::{
    Act, Course, Deadlines, Desired, Facts, Planned, PolicyView, Snapshot, StepAct, paused,
};
use crate::live::{changed_directives, is_live, live_only_change, template_hash};
use crate::resources::{CachedConfigMap, CachedService, CachedStatefulSet, config_map_name};

/// What runs now, as the cluster shows it.
#[derive(Debug, Default, Clone)]
pub struct Running {
    /// `redis.conf` of the instance's ConfigMap.
    pub config_text: Option<String>,
    /// The StatefulSet; `None` when there is none.
    pub statefulset: Option<StatefulSet>,
}

impl Running {
    /// The StatefulSet's replicas.
    fn replicas(&self) -> Option<i32> {
        self.statefulset.as_ref()?.spec.replicas
    }

    /// The StatefulSet as the operator's cache would hold it once its rollout in flight has
    /// finished and a scale has been applied (`diff` tells a scale apart, see [`scale_note`]):
    /// the question is what the new spec changes, not what is still in motion.
    fn settled(&self, replicas: i32) -> Option<CachedStatefulSet> {
        let mut sts = self.statefulset.clone()?;
        sts.spec.replicas = Some(replicas);
        let generation = sts.metadata.generation.or(Some(1));
        sts.metadata.generation = generation;
        sts.status = Some(StatefulSetStatus {
            observed_generation: generation,
            replicas,
            ready_replicas: Some(replicas),
            updated_replicas: Some(replicas),
            current_revision: Some("settled".into()),
            update_revision: Some("settled".into()),
            ..StatefulSetStatus::default()
        });
        Some(CachedStatefulSet::from(&sts))
    }
}

/// The outcome of applying a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Validation refuses it; nothing would change.
    Refused(Vec<Violation>),
    /// The API server refuses the object itself (its schema and rules, such as a storage size
    /// that cannot change); nothing would change.
    RefusedByApi(String),
    /// No StatefulSet yet: everything would be created.
    Create {
        /// The template hash it would carry.
        hash: String,
    },
    /// The pods already run it.
    Nothing,
    /// Applied with `CONFIG SET`, no restart.
    Live {
        /// The directives set.
        directives: Vec<String>,
    },
    /// The pods restart.
    Restart {
        /// What forces the restart.
        forcing: Vec<String>,
        /// Live directives that change with it.
        with: Vec<String>,
        /// How.
        strategy: RestartStrategy,
    },
}

/// The verdict for applying `new` over `running`: the operator's own decision function asked
/// about a snapshot of what runs, with the directives that make the difference named.
pub fn verdict(new: &RedisInstance, running: &Running) -> Verdict {
    let violations = crate::config::violations(new);
    if !violations.is_empty() {
        return Verdict::Refused(violations);
    }
    let rendered = render(&crate::config::effective(new));
    let hash = template_hash(new, &rendered);
    // The objects are built as the operator would, owned by the instance: a manifest read from
    // a file has no uid yet, and the owner reference changes no verdict.
    let mut owner = new.clone();
    owner
        .metadata
        .uid
        .get_or_insert_with(|| "not-created".into());
    let built = crate::resources::statefulset(&owner, &hash, None);
    let service = crate::resources::service(&owner);
    let headless = crate::resources::headless_service(&owner);
    let revision = crate::resources::revision_of(&owner, &hash);
    let shared = config_map_name(&owner);
    let want = Desired {
        config_text: &rendered.text,
        hash: &hash,
        strategy: new.spec.restart_strategy,
        statefulset: &built,
        service: &service,
        headless: &headless,
        live: new.spec.config_update == ConfigUpdate::Live,
        revision: &revision,
        shared: &shared,
    };
    // The Services and the revision's ConfigMap as desired: they restart nothing, and the
    // question is the pods.
    let (cached_service, cached_headless) = (
        CachedService::from(&service),
        CachedService::from(&headless),
    );
    let revisions = [std::sync::Arc::new(CachedConfigMap::from(
        &crate::resources::revision_config_map(&owner, &rendered, &hash),
    ))];
    let statefulset = running.settled(new.spec.replicas);
    let seen = Snapshot {
        config_text: running.config_text.as_deref(),
        statefulset: statefulset.as_ref(),
        service: Some(&cached_service),
        headless: Some(&cached_headless),
        pods: &[],
        rollout: None,
        settling: false,
        now: Timestamp::now(),
        live_refused: false,
        paused: false,
        halted: false,
        failed_hash: None,
        stalled: false,
        revisions: &revisions,
        // A plan of what a spec does to the objects; a replicated scale-down's handover is the
        // operator's to time.
        primary: None,
    };
    let deadlines = Deadlines {
        progress: std::time::Duration::MAX,
    };
    let explain = Explain {
        new,
        running_replicas: running.replicas(),
        old_text: running.config_text.as_deref(),
        new_text: &rendered.text,
    };
    // What ran before is judged from the status, as the actor does (see `status::has_run`).
    let facts = Facts {
        has_run: crate::status::has_run(new),
        ..Facts::default()
    };
    // No actor's memory: the status a restart would record is not the question.
    let status = crate::decide::StatusView::of_objects(
        new,
        statefulset.as_ref(),
        &[],
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(seen.now),
    );
    // The step's one decision, as the actor asks it: no NetworkPolicy to write (it restarts
    // nothing), no credentials (they restart nothing either), no replication.
    let course = Course::Planned(Planned {
        auth: None,
        want: &want,
        seen: &seen,
        deadlines: &deadlines,
        facts: &facts,
        replication: None,
        checks: &crate::decide::ChecksView::NONE,
        status: &status,
    });
    let no_policy = PolicyView {
        desired: None,
        cached: None,
        written: None,
    };
    let StepAct::Drive(drive) = crate::decide::step(&no_policy, &course).act else {
        return Verdict::Nothing;
    };
    match drive.verdict.act {
        Act::WriteConfigMap(_) | Act::CreateStatefulSet { .. } => Verdict::Create { hash },
        Act::BeginRestart { restart, .. } => explain.restart(restart.record.reason),
        Act::ApplyLive => Verdict::Live {
            directives: explain.live(),
        },
        _ => Verdict::Nothing,
    }
}

/// Names what makes the difference between the running file and the new one.
struct Explain<'a> {
    new: &'a RedisInstance,
    running_replicas: Option<i32>,
    old_text: Option<&'a str>,
    new_text: &'a str,
}

impl Explain<'_> {
    /// The changed directives: those that need a restart, and the live ones.
    fn changed(&self) -> (Vec<String>, Vec<String>) {
        let live_mode = self.new.spec.config_update == ConfigUpdate::Live;
        let changed = self
            .old_text
            .map(|old| changed_directives(old, self.new_text))
            .unwrap_or_default();
        changed
            .into_iter()
            .partition(|name| !(live_mode && is_live(name)))
    }

    fn live(&self) -> Vec<String> {
        self.old_text
            .and_then(|old| live_only_change(old, self.new_text))
            .map(|names| names.into_iter().collect())
            .unwrap_or_default()
    }

    fn becomes_replicated(&self) -> bool {
        self.running_replicas.is_some_and(|n| n < 2) && self.new.spec.replicas >= 2
    }

    fn restart(&self, reason: RestartReason) -> Verdict {
        let strategy = self.new.spec.restart_strategy;
        let (restart, live) = self.changed();
        let (forcing, with) = match reason {
            RestartReason::ConfigChanged if restart.is_empty() => (
                vec![
                    "the pod template's config hash (configUpdate changed how it is computed)"
                        .into(),
                ],
                live,
            ),
            RestartReason::ConfigChanged => (restart, live),
            RestartReason::ConfigMapChanged if self.old_text.is_none() => {
                (vec!["the ConfigMap is missing".into()], Vec::new())
            }
            // The template hash is unchanged, so what differs is the file alone: directives
            // removed from spec.config force the restart (Redis keeps a removed value until it
            // restarts); those changed with them are applied by it.
            RestartReason::ConfigMapChanged => {
                let (removed, changed): (Vec<String>, Vec<String>) = restart
                    .into_iter()
                    .chain(live)
                    .partition(|n| !self.new.spec.config.contains_key(n));
                let forcing = removed.into_iter().map(|n| format!("{n} (removed)"));
                (forcing.collect(), changed)
            }
            RestartReason::ImageChanged => {
                (vec![format!("image {}", self.new.spec.image)], Vec::new())
            }
            _ if self.becomes_replicated() => (
                vec!["replication: the one pod becomes a primary with replicas".into()],
                Vec::new(),
            ),
            RestartReason::PodTemplateChanged
            | RestartReason::Superseded
            | RestartReason::RolledBack => (
                vec!["the pod template (built differently by this operator version)".into()],
                Vec::new(),
            ),
        };
        Verdict::Restart {
            forcing,
            with,
            strategy,
        }
    }
}

impl Verdict {
    /// Exit status of `diff`: 0 when applying would be accepted, 1 when refused.
    pub fn exit_code(&self) -> i32 {
        i32::from(matches!(
            self,
            Verdict::Refused(_) | Verdict::RefusedByApi(_)
        ))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Refused(violations) => {
                writeln!(
                    f,
                    "refused: nothing would change; the pods keep their config"
                )?;
                for v in violations {
                    writeln!(f, "  {v}")?;
                }
                Ok(())
            }
            Verdict::RefusedByApi(message) => {
                writeln!(
                    f,
                    "refused by the API server: nothing would change; the pods keep their config"
                )?;
                writeln!(f, "  {message}")
            }
            Verdict::Create { hash } => writeln!(
                f,
                "create: ConfigMap, Service and StatefulSet with config {}",
                short_hash(hash)
            ),
            Verdict::Nothing => writeln!(f, "nothing: the pods already run this config"),
            Verdict::Live { directives } => writeln!(
                f,
                "live: CONFIG SET {} on every pod, no restart",
                directives.join(", ")
            ),
            Verdict::Restart {
                forcing,
                with,
                strategy,
            } => {
                writeln!(
                    f,
                    "restart ({}): forced by {}",
                    strategy.as_str(),
                    forcing.join(", ")
                )?;
                if !with.is_empty() {
                    writeln!(f, "  changing with it: {}", with.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

/// What a change of `spec.replicas` does besides the verdict: pods are added on the new
/// config or removed from the highest ordinal down, and, unless the verdict restarts them, the
/// others are not restarted for it.
pub fn scale_note(new: &RedisInstance, running: &Running, verdict: &Verdict) -> Option<String> {
    let from = running.replicas()?;
    let to = new.spec.replicas;
    let others = match verdict {
        Verdict::Restart { .. } => "",
        _ => ", none restarted for it",
    };
    match to.cmp(&from) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some(format!(
            "scale {from} -> {to}: {} pod(s) created{others}",
            to - from
        )),
        std::cmp::Ordering::Less => Some(format!(
            "scale {from} -> {to}: {} pod(s) removed from the highest ordinal down{others}",
            from - to
        )),
    }
}

/// Asks the API server whether it would accept `new` (a server-side apply with `dryRun`, which
/// stores nothing): its schema and rules refuse what validation here does not see, such as a
/// change of `spec.storage`. `Ok(None)` when accepted; `Err` when it could not be asked.
async fn admission(
    client: &Client,
    namespace: &str,
    new: &RedisInstance,
) -> Result<Option<String>, kube::Error> {
    let api = Api::<RedisInstance>::namespaced(client.clone(), namespace);
    let params = kube::api::PatchParams::apply(DRY_RUN_MANAGER)
        .dry_run()
        .force();
    let mut object = new.clone();
    object.metadata.namespace = Some(namespace.to_owned());
    object.metadata.resource_version = None;
    object.metadata.managed_fields = None;
    object.status = None;
    match api
        .patch(&new.name_any(), &params, &kube::api::Patch::Apply(&object))
        .await
    {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(status)) if matches!(status.code, 400 | 422) => {
            Ok(Some(status.message))
        }
        Err(other) => Err(other),
    }
}

/// The field manager of `diff`'s dry runs; nothing is stored under it.
const DRY_RUN_MANAGER: &str = "redis-operator-diff";

/// Why `diff` could not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or is not a RedisInstance.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Neither a file nor a name was given.
    #[error("give -f FILE, or --name NAME to preview the live object")]
    NoTarget,
    /// Talking to the API failed.
    #[error("{0}")]
    Api(String),
}

/// What `diff` is asked.
pub struct DiffRequest {
    /// A manifest to preview.
    pub file: Option<PathBuf>,
    /// Namespace (default: the manifest's, else the kubeconfig's).
    pub namespace: Option<String>,
    /// Name of the live object to preview when no file is given.
    pub name: Option<String>,
    /// Kubeconfig.
    pub kubeconfig: Option<PathBuf>,
}

fn read_manifest(path: &PathBuf) -> Result<RedisInstance, Error> {
    let file_err = |reason: String| Error::File {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    serde_yaml::from_str(&text).map_err(|e| file_err(e.to_string()))
}

/// Reads what runs and prints the verdict; returns the exit status.
pub async fn diff(request: DiffRequest) -> Result<i32, Error> {
    let config = crate::run::client_config(request.kubeconfig.as_ref())
        .await
        .map_err(Error::Api)?;
    let default_namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(|e| Error::Api(e.to_string()))?;
    let manifest = request.file.as_ref().map(read_manifest).transpose()?;
    let namespace = request
        .namespace
        .or_else(|| manifest.as_ref().and_then(|m| m.namespace()))
        .unwrap_or(default_namespace);
    let name = match (&manifest, &request.name) {
        (Some(m), _) => m.name_any(),
        (None, Some(name)) => name.clone(),
        (None, None) => return Err(Error::NoTarget),
    };
    let api_err = |e: kube::Error| Error::Api(e.to_string());
    let live = Api::<RedisInstance>::namespaced(client.clone(), &namespace)
        .get_opt(&name)
        .await
        .map_err(api_err)?;
    let new = match (manifest, &live) {
        // What ran before is judged from the cluster's status (see `auth::has_run`).
        (Some(mut m), Some(live)) => {
            m.status = live.status.clone();
            m
        }
        (Some(m), None) => m,
        (None, Some(live)) => live.clone(),
        (None, None) => {
            return Err(Error::Api(format!(
                "RedisInstance {namespace}/{name} not found"
            )));
        }
    };
    let mut running = Running::default();
    if live.is_some() {
        running.statefulset = Api::<StatefulSet>::namespaced(client.clone(), &namespace)
            .get_opt(&name)
            .await
            .map_err(api_err)?;
        running.config_text = Api::<ConfigMap>::namespaced(client.clone(), &namespace)
            .get_opt(&config_map_name(&new))
            .await
            .map_err(api_err)?
            .and_then(|cm| cm.data?.remove(CONFIG_FILE_KEY));
    }
    let mut verdict = verdict(&new, &running);
    if !matches!(verdict, Verdict::Refused(_)) {
        match admission(&client, &namespace, &new).await {
            Ok(Some(message)) => verdict = Verdict::RefusedByApi(message),
            Ok(None) => {}
            Err(error) => println!(
                "note: could not ask the API server whether it accepts the object (dry run): {error}"
            ),
        }
    }
    print!("{namespace}/{name}: {verdict}");
    if let Some(note) = scale_note(&new, &running, &verdict).filter(|_| verdict.exit_code() == 0) {
        println!("  {note}");
    }
    if paused(&new) {
        println!("  held while spec.paused is true; status.pendingChange shows it");
    }
    Ok(verdict.exit_code())
}

#[cfg(test)]
mod tests;
