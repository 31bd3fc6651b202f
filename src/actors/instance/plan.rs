//! The desired objects of the spec the pods should run, built once per step.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;

use crate::config::render::{RenderedConfig, render};
use crate::crd::RedisInstance;
use crate::live;
use crate::resources::{headless_service, service, statefulset};

/// The desired objects of one spec.
pub struct Plan {
    /// The spec they are built from.
    pub instance: Arc<RedisInstance>,
    /// Its rendered config.
    pub rendered: RenderedConfig,
    /// The hash its pod template carries (see [`live::template_hash`]).
    pub template_hash: String,
    /// Its live directives by primary name (empty unless `configUpdate: Live`).
    pub live: BTreeMap<String, String>,
    /// Their hash.
    pub live_hash: String,
    /// Its StatefulSet, without a restart marker.
    pub statefulset: StatefulSet,
    /// Its Service `<name>`.
    pub service: Service,
    /// Its headless Service.
    pub headless: Service,
}

impl Plan {
    /// The objects `instance`'s spec builds.
    pub fn of(instance: Arc<RedisInstance>) -> Self {
        let rendered = render(&crate::config::effective(&instance));
        let template_hash = live::template_hash(&instance, &rendered);
        let live = live::split(
            &crate::config::effective(&instance),
            instance.spec.config_update,
        )
        .live;
        Self {
            statefulset: statefulset(&instance, &template_hash, None),
            service: service(&instance),
            headless: headless_service(&instance),
            live_hash: live::live_hash(&live),
            live,
            template_hash,
            rendered,
            instance,
        }
    }
}
