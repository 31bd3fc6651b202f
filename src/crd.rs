//! The `RedisInstance` custom resource: what users declare and what the operator reports back.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

mod network_policy;
pub use network_policy::{ClientSelector, NetworkPolicySpec};

/// API group of every resource this operator defines.
pub const GROUP: &str = "redis.github.com";

/// Desired state of one Redis deployment.
// Each printcolumn repeats `type_ = ...`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "redis.github.com",
    version = "v1",
    kind = "RedisInstance",
    plural = "redisinstances",
    shortname = "redis",
    shortname = "ri",
    namespaced,
    status = "RedisInstanceStatus",
    derive = "PartialEq",
    doc = "A Redis server (one or more identical replicas) whose redis.conf is managed by redis-operator",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Hash",
        type_ = "string",
        json_path = ".status.shortHash",
        description = "first 12 hex digits of the applied config hash"
    ),
    printcolumn(name = "Restarts", type_ = "integer", json_path = ".status.restarts"),
    printcolumn(
        name = "Primary",
        type_ = "string",
        json_path = ".status.replication.primary",
        description = "the pod that takes writes, with two pods or more"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.tls) == has(oldSelf.tls) || (self.replicas < 2 && oldSelf.replicas < 2)",
    "message": "spec.tls cannot be added or removed while the instance has two pods or more: its new pods could not replicate from the old ones (TLS only against plain). Scale to 1 replica, change spec.tls, then scale back up"
}]))]
pub struct RedisInstanceSpec {
    /// Container image that provides `redis-server` and `redis-cli` (e.g. `redis:7.0`).
    #[schemars(length(min = 1))]
    pub image: String,
    /// Number of Redis pods; each gets its own PersistentVolumeClaim.
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Persistent volume for Redis's data directory. Size and class are fixed at creation: a
    /// StatefulSet's claim template cannot change, so the API server refuses edits rather than
    /// the operator failing later.
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.size == oldSelf.size && has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
        "message": "storage cannot change after creation (a StatefulSet's volume claim template is immutable); create a new RedisInstance to move the data"
    }]))]
    pub storage: StorageSpec,
    /// redis.conf directives, one entry per directive (e.g. `maxmemory: 100mb`).
    #[serde(default)]
    #[schemars(schema_with = "config_schema")]
    pub config: BTreeMap<String, String>,
    /// How a config change reaches the pods.
    #[serde(default)]
    pub restart_strategy: RestartStrategy,
    /// Whether directives Redis can change at runtime are applied to the running pods
    /// (`Live`) or by a restart (`Restart`, the default).
    #[serde(default)]
    pub config_update: ConfigUpdate,
    /// How long a restarted pod may take to become ready, and what happens when it does not.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// Bounds of a replicated instance's (two pods or more) switchovers and failovers.
    #[serde(default, skip_serializing_if = "ReplicationSpec::is_default")]
    pub replication: ReplicationSpec,
    /// Serve TLS only, with the certificate and CA of a Secret; see `TlsSpec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Which pods may connect to Redis: a NetworkPolicy `<name>`, on unless `enabled: false`.
    #[serde(default, skip_serializing_if = "NetworkPolicySpec::is_default")]
    pub network_policy: NetworkPolicySpec,
    /// Holds every restart and live apply; status shows the pending change until unpaused.
    /// The annotation `redis.github.com/paused: "true"` does the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Who may connect and with which passwords. Without it the `default` user gets a password
    /// the operator generates into the Secret `<name>-auth` (key `password`).
    #[serde(default, skip_serializing_if = "AuthSpec::is_default")]
    pub auth: AuthSpec,
}

/// Redis's ACL users, their passwords read from Secrets.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Users applications connect as. When set, `default` is off unless listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<AuthUser>,
    /// No password at all: anyone who reaches the port may run any command. For throwaway
    /// instances only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

impl AuthSpec {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// One ACL user.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthUser {
    /// The user name clients send with `AUTH <user> <password>` (`default` for `AUTH <password>`).
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// A Secret in the instance's namespace; every key of it holds one password of this user,
    /// so a rotation adds a key, moves the clients, then removes the old key.
    #[schemars(length(min = 1))]
    pub password_secret: String,
    /// ACL rules for the user (keys, channels, commands), as `ACL SETUSER` takes them.
    #[serde(default = "default_acl_rules")]
    pub rules: String,
}

fn default_acl_rules() -> String {
    "~* &* +@all".to_owned()
}

/// TLS on every connection: clients, replication and the operator's own.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A `kubernetes.io/tls` Secret in the instance's namespace holding `tls.crt`, `tls.key` and
    /// `ca.crt`, as cert-manager issues them. The certificate must name
    /// `<instance>.<namespace>.svc`, which the operator verifies; a change of the Secret is
    /// loaded by every pod without a restart.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Require every client to present a certificate signed by `ca.crt`
    /// (`tls-auth-clients yes`); by default clients need only trust the server's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auth_clients: bool,
}

/// Bounds of switchovers and failovers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// How long a restart's `FAILOVER` may pause writes while the target replica catches up;
    /// past it the old primary keeps its role and the restart halts.
    #[serde(default = "default_switchover_timeout")]
    #[schemars(range(min = 1, max = 60))]
    pub switchover_timeout_seconds: i32,
    /// A replica further behind the primary than this many bytes is not switched to, and no
    /// pod is replaced while one is; when the primary is lost, a replica last seen further
    /// behind is not promoted.
    #[serde(default = "default_max_lag_bytes")]
    #[schemars(range(min = 0))]
    pub max_lag_bytes: i64,
    /// When the primary is lost and every replica was last seen further behind than
    /// `maxLagBytes`, promote the one furthest ahead anyway (writes it lacks are lost) rather
    /// than wait without a primary.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failover_to_lagging_replica: bool,
}

fn default_switchover_timeout() -> i32 {
    5
}

fn default_max_lag_bytes() -> i64 {
    1024 * 1024
}

impl Default for ReplicationSpec {
    fn default() -> Self {
        Self {
            switchover_timeout_seconds: default_switchover_timeout(),
            max_lag_bytes: default_max_lag_bytes(),
            failover_to_lagging_replica: false,
        }
    }
}

impl ReplicationSpec {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// How a config change reaches running pods.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
pub enum ConfigUpdate {
    /// Every change restarts the pods (the StatefulSet's template carries the hash of the
    /// whole file).
    #[default]
    Restart,
    /// Directives Redis can change at runtime are applied with `CONFIG SET` on every pod,
    /// all or nothing; only the others restart the pods.
    Live,
}

/// Safety limits of a restart.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Seconds a pod on the new config may take to become ready before the rollout halts.
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 10, max = 86400))]
    pub progress_deadline_seconds: i32,
    /// What a halted rollout does: go back to the last config that ran, or stay halted.
    #[serde(default)]
    pub on_failure: OnFailure,
}

fn default_progress_deadline() -> i32 {
    120
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            progress_deadline_seconds: default_progress_deadline(),
            on_failure: OnFailure::default(),
        }
    }
}

/// What a halted rollout does.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
pub enum OnFailure {
    /// Restart the pods on the last config that ran.
    #[default]
    Rollback,
    /// Replace no further pods; wait for a fixed spec.
    Halt,
}

/// What happens to the data claims when the instance is deleted or scaled down.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    /// On deletion of the instance: keep the claims (`Retain`, the default) or delete them.
    #[serde(default)]
    pub when_deleted: Retention,
    /// On scale-down: keep the claims of removed pods (`Retain`, the default) or delete them.
    #[serde(default)]
    pub when_scaled: Retention,
}

/// Keep or delete.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
pub enum Retention {
    /// Keep the claims (and the data).
    #[default]
    Retain,
    /// Delete the claims.
    Delete,
}

impl Retention {
    /// The StatefulSet API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Retention::Retain => "Retain",
            Retention::Delete => "Delete",
        }
    }
}

/// The PersistentVolumeClaim template for `/data`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size as a Kubernetes quantity, e.g. `1Gi`.
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,
    /// StorageClass of the claim; the cluster default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Whether the claims outlive the instance and scale-downs; may change at any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<RetentionPolicy>,
}

/// How pods pick up a new config.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
pub enum RestartStrategy {
    /// Update the pod template; the StatefulSet controller replaces pods one at a time.
    #[default]
    RollingUpdate,
    /// Delete the StatefulSet and its pods, wait until they are gone, create it anew.
    Recreate,
}

impl RestartStrategy {
    /// Fixed label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartStrategy::RollingUpdate => "RollingUpdate",
            RestartStrategy::Recreate => "Recreate",
        }
    }
}

/// The structural schema rejects what it can at admission: directive-shaped keys, and values
/// without newlines or control characters, which would otherwise inject extra directives.
fn config_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": 200,
        "additionalProperties": {
            "type": "string",
            "maxLength": 4096,
            "pattern": "^[^\\x00-\\x1f\\x7f]*$"
        },
        "x-kubernetes-validations": [{
            "rule": "self.all(k, k.matches('^[a-z][a-z0-9_-]{0,63}$'))",
            "messageExpression": "'config key \"' + self.filter(k, !k.matches('^[a-z][a-z0-9_-]{0,63}$'))[0] + '\" is not a redis.conf directive name: lowercase letters, digits, dashes and underscores, starting with a letter'"
        }]
    })
}

/// Longest name whose objects Kubernetes accepts: the StatefulSet controller labels each pod
/// with `controller-revision-hash: <name>-<10 characters>`, and a label value holds 63.
pub const MAX_NAME_LENGTH: usize = 52;

/// The CustomResourceDefinition as installed: the derived schema plus admission rules on
/// `metadata.name`, refusing at `kubectl apply` a name the operator could not run (a dot is no
/// Service name; a long name makes the pods' labels too long).
pub fn definition() -> CustomResourceDefinition {
    let mut crd = RedisInstance::crd();
    let rules = serde_json::json!([
        {
            "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            "message": "metadata.name must be a DNS label (lowercase letters, digits and '-', starting with a letter, ending with a letter or digit): it also names the instance's Service, StatefulSet and pods"
        },
        {
            "rule": format!("size(self.metadata.name) <= {MAX_NAME_LENGTH}"),
            "message": format!("metadata.name must be at most {MAX_NAME_LENGTH} characters: the StatefulSet's pods carry a controller-revision-hash label of the name plus 11 characters, and a label holds at most 63")
        }
    ]);
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            schema.x_kubernetes_validations =
                Some(serde_json::from_value(rules.clone()).expect("static rules are valid"));
        }
    }
    crd
}

/// What the operator last observed and did.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisInstanceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// SHA-256 (hex) of the redis.conf the pods run with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// First 12 hex digits of `configHash`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_hash: Option<String>,
    /// Pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Config-change restarts performed since the instance was created.
    #[serde(default)]
    pub restarts: i64,
    /// When the last config-change restart began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart_time: Option<Time>,
    /// Under `configUpdate: Live`, SHA-256 of the runtime-changeable directives the pods were
    /// last verified to run (`CONFIG GET`); `configHash` covers the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_config_hash: Option<String>,
    /// A live change Redis refused: its hash. It is not tried again until spec.config changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_live_config_hash: Option<String>,
    /// A change held back by `spec.paused`: what would happen when unpaused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_change: Option<String>,
    /// A config that passed validation but that redis-server refused at startup; the pods were
    /// rolled back and it is not tried again until spec.config changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_config_hash: Option<String>,
    /// The restart in flight, written before its first step so that an operator restarted
    /// mid-sequence finishes it without counting it twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutRecord>,
    /// The StatefulSet's `metadata.generation` after the operator's last write of it: a higher
    /// one means someone else changed it, so a difference in its pod template is drift to put
    /// back, not a change of the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful_set_generation: Option<i64>,
    /// One-word summary: Pending, Restarting, Running, Degraded, Invalid, Paused or Halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// A multi-pod instance's replication: its primary, each pod's role and link, and the
    /// switchover in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationStatus>,
    /// The spec the pods last ran to completion and ready, as JSON (credential directives left
    /// out): what a config the pods fail on rolls back to, and what the operator keeps the
    /// objects on while the current spec is refused, across operator restarts. A string, so
    /// that each write replaces it whole and the spec's rules do not judge a recorded copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_spec: Option<String>,
    /// While the current spec is refused: the newest spec that passed validation, as JSON
    /// (credential directives left out), which the operator keeps driving the pods to (a
    /// restart in flight included), across operator restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_spec: Option<String>,
    /// SHA-256 of the ACL file every running pod was last brought in line with (it holds
    /// password hashes, never passwords): a Secret edit that changes it is applied live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl_hash: Option<String>,
    /// Ready, ConfigValid and Progressing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Who the primary is, as the operator decided it: recorded before the role changes, so a new
/// leader continues the decision instead of taking another.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationStatus {
    /// The pod that takes writes (selected by the Service `<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// Role changes so far: planned switchovers and failovers.
    #[serde(default)]
    pub role_changes: i64,
    /// Of those, failovers after the primary was lost.
    #[serde(default)]
    pub failovers: i64,
    /// A planned switchover in flight, written before `FAILOVER` is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverRecord>,
    /// The restart (by its config hash) whose switchover failed, and why: it halts there,
    /// with the old primary serving, until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover_failed: Option<SwitchoverFailure>,
    /// Each pod's role and link, as last probed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<ReplicaPodStatus>,
}

/// A switchover from one pod to another.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverRecord {
    /// The primary handing over.
    pub from: String,
    /// The replica taking over.
    pub to: String,
    /// When it began.
    pub started_at: Time,
}

/// A switchover that did not happen.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverFailure {
    /// Config hash of the restart it belonged to.
    pub config_hash: String,
    /// What happened.
    pub message: String,
}

/// One pod's replication, for status.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaPodStatus {
    /// The pod.
    pub name: String,
    /// `primary`, `replica`, `unassigned` (started, no role given yet) or `unreachable`.
    pub role: String,
    /// A replica's link to the primary: `up`, `down` or `syncing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// How far a replica is behind the primary, in whole MiB of its replication stream, while
    /// further behind than `spec.replication.maxLagBytes` (exact figures are in the metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
}

/// A restart of the pods that has begun and not yet completed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    /// Config hash the pods are being restarted onto.
    pub config_hash: String,
    /// Value of the pod template's restarted-at annotation when the hash alone does not change
    /// (the ConfigMap was rewritten or deleted behind the pods' back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<String>,
    /// Strategy the restart runs with; an edit of `restartStrategy` applies to the next one.
    pub strategy: RestartStrategy,
    /// Why the pods restart.
    pub reason: RestartReason,
    /// When the restart began; progress deadlines count from here, across operator restarts.
    pub started_at: Time,
}

/// Why pods are restarted; a fixed set, used as Event text and metric label.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub enum RestartReason {
    /// `spec.config` changed: the template hash differs from the desired one.
    ConfigChanged,
    /// The ConfigMap was missing or its content differed while the template hash matched.
    ConfigMapChanged,
    /// `spec.image` changed, or the StatefulSet's image was edited by hand.
    ImageChanged,
    /// Another part of the pod template differs from what the operator builds.
    PodTemplateChanged,
    /// The restart in flight was failing and a newer config replaced its target.
    Superseded,
    /// The pods refused the new config or never became ready on it: back to the last config
    /// that ran.
    RolledBack,
}

impl RestartReason {
    /// Fixed label for metrics, Events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartReason::ConfigChanged => "ConfigChanged",
            RestartReason::ConfigMapChanged => "ConfigMapChanged",
            RestartReason::ImageChanged => "ImageChanged",
            RestartReason::PodTemplateChanged => "PodTemplateChanged",
            RestartReason::Superseded => "Superseded",
            RestartReason::RolledBack => "RolledBack",
        }
    }
}

/// One-word summary of an instance.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Objects are being created; no pod is ready yet.
    Pending,
    /// A config change is being rolled out.
    Restarting,
    /// All replicas run the desired config and are ready.
    Running,
    /// Pods run the desired config but not all are ready.
    Degraded,
    /// The spec was refused; the pods keep their last good config.
    Invalid,
    /// `spec.paused` holds a change back.
    Paused,
    /// A restart's pod did not become ready in time; no further pods are replaced.
    Halted,
}

impl Phase {
    /// Fixed label for metrics and the HTTP snapshot.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Restarting => "Restarting",
            Phase::Running => "Running",
            Phase::Degraded => "Degraded",
            Phase::Invalid => "Invalid",
            Phase::Paused => "Paused",
            Phase::Halted => "Halted",
        }
    }
}

#[cfg(test)]
mod tests;
