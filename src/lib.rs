//! redis-operator: runs Redis instances declared as `RedisInstance` resources.

pub mod actors;
pub mod api_traffic;
pub mod auth;
pub mod cluster_clock;
pub mod config;
pub mod crd;
pub mod decide;
pub mod events;
pub mod health;
pub mod http;
pub mod instance_logs;
pub mod kube_io;
pub mod leader;
pub mod limiter;
pub mod live;
pub mod preview;
pub mod replication;
pub mod resources;
pub mod run;
pub mod stages;
pub mod status;
pub mod telemetry;
pub mod text;
pub mod tls;
