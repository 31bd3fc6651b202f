//! The RedisInstance definition: status subresource and columns, the committed CRD, the example.

use super::*;

#[test]
fn crd_has_status_subresource_and_printer_columns() {
    let crd = definition();
    let version = &crd.spec.versions[0];
    assert_eq!(crd.spec.group, GROUP);
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<_> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Replicas", "Ready", "Phase", "Hash", "Restarts", "Primary", "Age"
        ]
    );
}

#[test]
fn committed_crd_yaml_is_current() {
    let generated = serde_yaml::to_string(&definition()).unwrap();
    let committed = include_str!("../../deploy/base/crd.yaml");
    assert!(
        generated == committed,
        "deploy/base/crd.yaml is stale: run `make crd` and commit the result"
    );
}

#[test]
fn spec_example_deserializes_with_default_strategy() {
    let spec: RedisInstanceSpec = serde_yaml::from_str(
        "image: redis:7.0\nreplicas: 1\nstorage: {size: 1Gi, storageClassName: standard}\nconfig: {maxmemory: 100mb}\n",
    )
    .unwrap();
    assert_eq!(spec.restart_strategy, RestartStrategy::RollingUpdate);
    assert_eq!(spec.storage.storage_class_name.as_deref(), Some("standard"));
    assert_eq!(spec.config["maxmemory"], "100mb");
}
