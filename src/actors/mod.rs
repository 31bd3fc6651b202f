//! The actor tree.
//!
//! ```text
//! watches.rs ──────── watch caches (cache.rs): RedisInstances; managed ConfigMaps, StatefulSets,
//!                     Services, Pods (read by the instance actors; events routed by label);
//!                     revision_index.rs: each instance's revision ConfigMaps by name
//! SupervisorActor ── one instance actor per RedisInstance, respawned if it fails (routing.rs:
//!                     which watch events call for a step); an actor at rest hibernates and
//!                     is started again by the next event for it (children.rs)
//!   ├── RedisInstanceActor (observe caches -> decide -> perform writes -> status; one step
//!   │                       per message)
//!   ├── RedisInstanceActor ...
//! MetricsActor ─────── restarts, drift repairs, mismatches, errors; renders /metrics
//! ```

pub mod cache;
mod children;
pub mod instance;
pub mod metrics;
pub mod revision_index;
mod routing;
pub mod supervisor;
mod watches;

#[cfg(test)]
mod mock_api_tests;
