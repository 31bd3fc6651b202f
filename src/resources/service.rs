//! The headless Service that gives each Redis pod a stable DNS name.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{owned_meta, selector_labels};
use crate::config::render::REDIS_PORT;
use crate::crd::RedisInstance;

/// Headless Service `<instance>`, the StatefulSet's `serviceName`.
pub fn service(instance: &RedisInstance) -> Service {
    Service {
        metadata: owned_meta(instance, instance.name_any()),
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
    fn is_headless_and_selects_the_instance() {
        let svc = service(&instance(&[]));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(
            spec.selector.unwrap()["app.kubernetes.io/instance"],
            "redis-example"
        );
        assert_eq!(spec.ports.unwrap()[0].port, 6379);
    }
}
