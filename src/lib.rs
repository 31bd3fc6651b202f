//! redis-operator: runs Redis instances declared as `RedisInstance` resources.

pub mod config;
pub mod crd;
pub mod resources;
