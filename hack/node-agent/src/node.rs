//! The Node object and its Lease: registration, heartbeats, and a NotReady mark at shutdown.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::capacity;
use crate::ipam::Cidr;

/// Registering or updating the Node failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An apiserver call failed.
    #[error("failed to {0}: {1}")]
    Api(&'static str, #[source] kube::Error),
    /// Host facts for the capacity could not be read.
    #[error(transparent)]
    Capacity(#[from] capacity::Error),
}

/// Field manager for the server-side applied Lease.
const MANAGER: &str = "node-agent";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_DURATION_SECONDS: i32 = 40;
/// A quarter of the lease duration, as the kubelet does.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Everything the Node object states about this host.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub pod_cidr: Cidr,
    /// The host's address on the pod network; pods reach the host there.
    pub host_ip: Ipv4Addr,
    pub state_dir: PathBuf,
    pub max_pods: u32,
    /// Where the API server reaches this node's kubelet port (on `host_ip`), if it is served.
    pub kubelet_port: Option<u16>,
}

pub fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".into(), name.into()),
        ("kubernetes.io/os".into(), "linux".into()),
        ("kubernetes.io/arch".into(), capacity::go_arch().into()),
    ])
}

/// The Node's status; `ready_since` keeps the Ready transition time stable across heartbeats.
fn status(
    cfg: &NodeConfig,
    kubelet_version: &str,
    ready: bool,
    ready_since: Timestamp,
    now: Timestamp,
) -> Result<NodeStatus, Error> {
    let capacity = capacity::capacity(&cfg.state_dir, cfg.max_pods)?;
    let condition = |type_: &str, status: bool, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(ready_since)),
    };
    let (reason, message) = if ready {
        ("NodeAgentReady", "node agent is posting ready status")
    } else {
        (
            "NodeAgentStopped",
            "node agent stopped; pods on this node are not running",
        )
    };
    Ok(NodeStatus {
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: cfg.host_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: cfg.name.clone(),
            },
        ]),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                false,
                "NodeAgentHasSufficientMemory",
                "no memory pressure is reported",
            ),
            condition(
                "DiskPressure",
                false,
                "NodeAgentHasNoDiskPressure",
                "no disk pressure is reported",
            ),
            condition(
                "PIDPressure",
                false,
                "NodeAgentHasSufficientPID",
                "no PID pressure is reported",
            ),
            condition("Ready", ready, reason, message),
        ]),
        node_info: Some(capacity::system_info(kubelet_version)),
        // 0 when not served, rather than absent: a merge patch would keep an earlier run's port.
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: cfg.kubelet_port.map_or(0, i32::from),
            }),
        }),
        ..NodeStatus::default()
    })
}

/// Creates the Node (or adopts one left from an earlier run) and reports it Ready.
pub struct Registration {
    client: Client,
    cfg: NodeConfig,
    kubelet_version: String,
    ready_since: Timestamp,
    owner: OwnerReference,
}

impl Registration {
    pub async fn register(client: Client, cfg: NodeConfig) -> Result<Self, Error> {
        let nodes: Api<Node> = Api::all(client.clone());
        // The apiserver's version: controllers compare kubelet versions for feature support.
        let kubelet_version = client
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .map_err(|e| Error::Api("read the apiserver version", e))?;
        let node = Node {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                labels: Some(labels(&cfg.name)),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(cfg.pod_cidr.to_string()),
                pod_cidrs: Some(vec![cfg.pod_cidr.to_string()]),
                ..NodeSpec::default()
            }),
            status: None,
        };
        let node = match nodes.create(&PostParams::default(), &node).await {
            Ok(node) => node,
            Err(kube::Error::Api(s)) if s.is_already_exists() => nodes
                .get(&cfg.name)
                .await
                .map_err(|e| Error::Api("read the existing node", e))?,
            Err(e) => return Err(Error::Api("create the node", e)),
        };
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: cfg.name.clone(),
            uid: node.metadata.uid.unwrap_or_default(),
            ..OwnerReference::default()
        };
        let registration = Self {
            client,
            cfg,
            kubelet_version,
            ready_since: Timestamp::now(),
            owner,
        };
        registration.beat(true).await?;
        Ok(registration)
    }

    /// Renews the Lease and posts the status.
    async fn beat(&self, ready: bool) -> Result<(), Error> {
        let now = Timestamp::now();
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.cfg.name.clone()),
                owner_references: Some(vec![self.owner.clone()]),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.cfg.name.clone()),
                lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                renew_time: Some(MicroTime(now)),
                ..LeaseSpec::default()
            }),
        };
        leases
            .patch(
                &self.cfg.name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
            .map_err(|e| Error::Api("renew the node lease", e))?;
        let status = status(
            &self.cfg,
            &self.kubelet_version,
            ready,
            self.ready_since,
            now,
        )?;
        Api::<Node>::all(self.client.clone())
            .patch_status(
                &self.cfg.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .map_err(|e| Error::Api("update the node status", e))?;
        Ok(())
    }

    /// Heartbeats until `shutdown`, then marks the node NotReady (best effort).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(HEARTBEAT);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    if let Err(error) = self.beat(true).await {
                        tracing::warn!(%error, "heartbeat failed");
                    }
                }
            }
        }
        self.ready_since = Timestamp::now();
        match tokio::time::timeout(Duration::from_secs(5), self.beat(false)).await {
            Ok(Err(error)) => tracing::warn!(%error, "failed to mark the node NotReady"),
            Err(_) => tracing::warn!("timed out marking the node NotReady"),
            Ok(Ok(())) => {}
        }
    }
}
