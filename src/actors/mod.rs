//! The actor tree.
//!
//! ```text
//! SupervisorActor ── watches RedisInstances, ConfigMaps, StatefulSets, Pods
//!   ├── RedisInstanceActor (one per RedisInstance: its state machine, one step per message)
//!   ├── RedisInstanceActor ...
//! MetricsActor ─────── counts restarts / hash mismatches; renders /metrics
//! ```

pub mod instance;
pub mod metrics;
pub mod supervisor;
mod watches;

#[cfg(test)]
mod mock_api_tests;
