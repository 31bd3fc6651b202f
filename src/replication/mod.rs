//! Replication of a multi-pod instance: what each pod's Redis says of its role, and the
//! commands that give pods their roles (`REPLICAOF`, `FAILOVER`).
//!
//! Which pod is the primary is decided by the operator and recorded in status; who follows
//! whom is runtime state, never part of the hashed config, so a role change restarts nothing.

mod commands;
mod info;

pub use commands::{Error, Link, await_handover, demote, failover_to, follow, probe, promote};
pub use info::{FailoverState, PodReplication, Role, parse_info};

/// Where a pod's Redis points before the operator has told it its role: a port nothing
/// listens on. A pod starts as a read-only replica of nothing, so a restarted primary never
/// takes writes on stale data, and never feeds its data to the others.
pub const BOOT_PRIMARY_HOST: &str = "127.0.0.1";
/// See [`BOOT_PRIMARY_HOST`].
pub const BOOT_PRIMARY_PORT: u16 = 1;

/// Whether a replica still points at the boot placeholder: it started and has no role yet.
pub fn awaiting_role(pod: &PodReplication) -> bool {
    pod.role == Role::Replica
        && pod.primary_host.as_deref() == Some(BOOT_PRIMARY_HOST)
        && pod.primary_port == Some(BOOT_PRIMARY_PORT)
}
