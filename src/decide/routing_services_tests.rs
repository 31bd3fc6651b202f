//! Rows for the role Services: the old primary Service retired once `<name>` serves, the
//! replicas Service applied when missing or changed, and the actor's own write kept until the
//! cache shows it.

use super::*;
use crate::resources::fixtures::instance;
use crate::resources::{headless_service, service};

#[test]
fn the_role_services_retire_the_old_primary_service_then_keep_the_replicas_one() {
    let ri = instance(&[]);
    let desired = service(&ri);
    let cluster_ip = CachedService::from(&desired);
    let headless = CachedService::from(&headless_service(&ri));
    let mut drifted_svc = desired.clone();
    drifted_svc.spec.as_mut().unwrap().ports = None;
    let drifted = CachedService::from(&drifted_svc);
    let legacy = CachedService::from(&service(&ri));
    let mut leaving = legacy.clone();
    leaving.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    let replicas = crate::resources::replicas_service(&ri);
    let replicas_cached = CachedService::from(&replicas);
    let mut old_replicas = replicas.clone();
    old_replicas.spec.as_mut().unwrap().ports = None;
    let old_replicas = CachedService::from(&old_replicas);
    let view = |service, legacy, serving, cached, written| RoleServicesView {
        desired_service: &desired,
        service,
        legacy,
        service_serving: serving,
        desired_replicas: &replicas,
        replicas: cached,
        replicas_written: written,
    };
    let keep = |forget_written| RoleServicesAct::Keep { forget_written };
    let apply = |over| RoleServicesAct::ApplyReplicas {
        desired: &replicas,
        over,
    };
    let ok = Some(&replicas_cached);
    // (row, view, endpoints read, act)
    let table = [
        (
            "old primary Service, <name> serves",
            view(Some(&cluster_ip), Some(&legacy), Some(true), ok, None),
            true,
            RoleServicesAct::RetireLegacy(&legacy),
        ),
        (
            "old primary Service, <name> lists no ready pod",
            view(Some(&cluster_ip), Some(&legacy), Some(false), ok, None),
            true,
            keep(true),
        ),
        (
            "old primary Service, <name> still headless",
            view(Some(&headless), Some(&legacy), None, ok, None),
            false,
            keep(true),
        ),
        (
            "old primary Service, <name> drifted",
            view(Some(&drifted), Some(&legacy), None, ok, None),
            false,
            keep(true),
        ),
        (
            "old primary Service being deleted",
            view(Some(&cluster_ip), Some(&leaving), None, ok, None),
            false,
            keep(true),
        ),
        (
            "replicas Service missing",
            view(Some(&cluster_ip), None, None, None, None),
            false,
            apply(None),
        ),
        (
            "replicas Service changed by hand",
            view(Some(&cluster_ip), None, None, Some(&old_replicas), None),
            false,
            apply(Some(&old_replicas)),
        ),
        (
            "replicas Service written, cache behind",
            view(
                Some(&cluster_ip),
                None,
                None,
                Some(&old_replicas),
                Some(&replicas_cached),
            ),
            false,
            keep(false),
        ),
        (
            "replicas Service written and cached",
            view(Some(&cluster_ip), None, None, ok, Some(&replicas_cached)),
            false,
            keep(true),
        ),
    ];
    for (row, view, reads, act) in table {
        assert_eq!(legacy_to_retire(&view).is_some(), reads, "{row}");
        assert_eq!(role_services(&view), act, "{row}");
    }
}
