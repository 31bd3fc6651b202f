//! The instance's two Services of every shape: `<instance>`, the ClusterIP Service clients
//! write through, and `<instance>-headless`, which gives each pod a stable DNS name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::replicated::{ROLE_LABEL, replicated};
use super::{owned_meta, selector_labels};
use crate::config::render::REDIS_PORT;
use crate::crd::RedisInstance;
use crate::replication::Role;

/// ClusterIP Service `<instance>`: the primary of a replicated instance, otherwise its pods
/// (the one pod, or an unconverted instance's unrelated servers, as before replication).
pub fn service(instance: &RedisInstance) -> Service {
    let mut selector: BTreeMap<String, String> = selector_labels(instance);
    if replicated(instance) {
        selector.insert(ROLE_LABEL.to_owned(), Role::Primary.as_str().to_owned());
    }
    Service {
        metadata: owned_meta(instance, instance.name_any()),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![redis_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `<instance>` as built for the other replication state (with or without the role in its
/// selector): a live Service of that shape was the operator's own, for the spec as it was.
pub fn other_shape(service: &Service) -> Service {
    let mut other = service.clone();
    if let Some(selector) = other.spec.as_mut().and_then(|s| s.selector.as_mut())
        && selector.remove(ROLE_LABEL).is_none()
    {
        selector.insert(ROLE_LABEL.to_owned(), Role::Primary.as_str().to_owned());
    }
    other
}

/// Name of the headless Service, the StatefulSet's `serviceName`: pods are
/// `<instance>-<ordinal>.<instance>-headless`.
pub fn headless_service_name(instance: &RedisInstance) -> String {
    format!("{}-headless", instance.name_any())
}

/// Headless Service `<instance>-headless`, selecting every pod.
pub fn headless_service(instance: &RedisInstance) -> Service {
    Service {
        metadata: owned_meta(instance, headless_service_name(instance)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(instance)),
            // Peers and clients can find a pod while it loads its dataset.
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![redis_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Name of the write Service of the first replicated versions, replaced by `<instance>`: it is
/// kept until `<instance>` selects the primary, then deleted.
pub fn legacy_primary_service_name(instance: &RedisInstance) -> String {
    format!("{}-primary", instance.name_any())
}

/// Port 6379 to the pods' `redis` port, on every Service of an instance.
pub(super) fn redis_port() -> ServicePort {
    ServicePort {
        name: Some("redis".into()),
        port: REDIS_PORT,
        target_port: Some(IntOrString::String("redis".into())),
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::instance;

    #[test]
    fn the_headless_service_selects_every_pod_under_its_own_name() {
        let svc = headless_service(&instance(&[]));
        assert_eq!(svc.metadata.name.as_deref(), Some("redis-example-headless"));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(
            spec.selector.unwrap()["app.kubernetes.io/instance"],
            "redis-example"
        );
        assert_eq!(spec.ports.unwrap()[0].port, 6379);
    }

    #[test]
    fn the_named_service_has_a_cluster_ip_and_selects_the_primary_once_replicated() {
        let mut one = instance(&[]);
        let svc = service(&one);
        assert_eq!(svc.metadata.name.as_deref(), Some("redis-example"));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip, None, "the API server assigns one");
        assert!(!spec.selector.unwrap().contains_key(ROLE_LABEL));
        one.spec.replicas = 3;
        let selector = service(&one).spec.unwrap().selector.unwrap();
        assert_eq!(selector[ROLE_LABEL], "primary");
        assert_eq!(selector["app.kubernetes.io/instance"], "redis-example");
        assert_eq!(other_shape(&service(&one)), service(&instance(&[])));
        assert_eq!(other_shape(&service(&instance(&[]))), service(&one));
    }
}
