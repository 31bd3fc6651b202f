//! Pure handling of `spec.config`: validate the directives, render `redis.conf`, hash it.

pub mod directives;
pub mod render;
pub mod validate;
