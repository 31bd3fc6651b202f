//! A container's environment: defaults, `envFrom`, `env` (with `valueFrom`), `$(VAR)` expansion.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Container, Pod};

/// Data of the ConfigMaps and Secrets a container refers to, fetched by the caller.
#[derive(Debug, Default)]
pub struct Sources {
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
}

/// The pod facts that `fieldRef`s can read but the Pod object may not carry yet.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub pod_ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
}

/// Failures of building the environment; the container cannot start until they are fixed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A `configMapKeyRef`/`secretKeyRef`/`envFrom` names an object that does not exist.
    #[error("failed to find {kind} {name:?}")]
    MissingSource { kind: &'static str, name: String },
    /// The referenced object exists but lacks the key.
    #[error("failed to find key {key:?} in {kind} {name:?}")]
    MissingKey {
        kind: &'static str,
        name: String,
        key: String,
    },
    /// A `fieldRef` path this agent does not know.
    #[error("failed to resolve fieldRef {0:?}: not supported by the local node agent")]
    UnsupportedField(String),
    /// `resourceFieldRef` or `fileKeyRef`, which this agent does not implement.
    #[error(
        "failed to resolve env {0:?}: only value, fieldRef, configMapKeyRef and secretKeyRef are supported"
    )]
    UnsupportedSource(String),
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Names of the ConfigMaps and Secrets the container's environment reads, to fetch beforehand.
pub fn referenced_sources(container: &Container) -> (Vec<String>, Vec<String>) {
    let (mut config_maps, mut secrets) = (Vec::new(), Vec::new());
    for from in container.env_from.iter().flatten() {
        config_maps.extend(from.config_map_ref.as_ref().map(|r| r.name.clone()));
        secrets.extend(from.secret_ref.as_ref().map(|r| r.name.clone()));
    }
    for var in container.env.iter().flatten() {
        let Some(source) = &var.value_from else {
            continue;
        };
        config_maps.extend(source.config_map_key_ref.as_ref().map(|r| r.name.clone()));
        secrets.extend(source.secret_key_ref.as_ref().map(|r| r.name.clone()));
    }
    config_maps.sort();
    config_maps.dedup();
    secrets.sort();
    secrets.dedup();
    (config_maps, secrets)
}

/// The hostname a pod's containers see (`spec.hostname`, else the pod name).
pub fn hostname(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default()
}

/// The environment in definition order; later entries win, as in a container runtime: the
/// runtime's defaults, the image's `image_env`, then the container's own.
pub fn build(
    pod: &Pod,
    container: &Container,
    addresses: Addresses,
    sources: &Sources,
    image_env: &[(String, String)],
) -> Result<Vec<(String, String)>, Error> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOSTNAME".into(), hostname(pod)),
        ("HOME".into(), "/root".into()),
    ];
    for (name, value) in image_env {
        set(&mut env, name.clone(), value.clone());
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let data = if let Some(r) = &from.config_map_ref {
            lookup(&sources.config_maps, "configmap", &r.name, r.optional)?
        } else if let Some(r) = &from.secret_ref {
            lookup(&sources.secrets, "secret", &r.name, r.optional)?
        } else {
            None
        };
        for (key, value) in data.into_iter().flatten() {
            set(&mut env, format!("{prefix}{key}"), value.clone());
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    Some(pod_field(pod, &field.field_path, addresses)?)
                } else if let Some(r) = &from.config_map_key_ref {
                    key_of(
                        &sources.config_maps,
                        "configmap",
                        &r.name,
                        &r.key,
                        r.optional,
                    )?
                } else if let Some(r) = &from.secret_key_ref {
                    key_of(&sources.secrets, "secret", &r.name, &r.key, r.optional)?
                } else {
                    return Err(Error::UnsupportedSource(var.name.clone()));
                }
            }
            (value, None) => {
                let value = value.as_deref().unwrap_or("");
                Some(expand(value, |name| get(&env, name)))
            }
        };
        if let Some(value) = value {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

/// The variables a kubelet gives every container for the API server's Service.
pub fn api_service(api: std::net::SocketAddr) -> Vec<(String, String)> {
    let (host, port) = (api.ip().to_string(), api.port().to_string());
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), port.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone()),
        ("KUBERNETES_PORT".into(), format!("tcp://{host}:{port}")),
    ]
}

/// The argv: command (or the image default) then args, `$(VAR)` expanded from `env`.
pub fn argv(
    container: &Container,
    default_command: &[&str],
    env: &[(String, String)],
) -> Vec<String> {
    let command: Vec<String> = match &container.command {
        Some(command) if !command.is_empty() => command.clone(),
        _ => default_command.iter().map(|s| s.to_string()).collect(),
    };
    command
        .iter()
        .chain(container.args.iter().flatten())
        .map(|arg| expand(arg, |name| get(env, name)))
        .collect()
}

fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
    env.retain(|(k, _)| *k != name);
    env.push((name, value));
}

fn lookup<'a>(
    all: &'a BTreeMap<String, BTreeMap<String, String>>,
    kind: &'static str,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<&'a BTreeMap<String, String>>, Error> {
    match all.get(name) {
        Some(data) => Ok(Some(data)),
        None if optional == Some(true) => Ok(None),
        None => Err(Error::MissingSource {
            kind,
            name: name.to_owned(),
        }),
    }
}

fn key_of(
    all: &BTreeMap<String, BTreeMap<String, String>>,
    kind: &'static str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<Option<String>, Error> {
    let Some(data) = lookup(all, kind, name, optional)? else {
        return Ok(None);
    };
    match data.get(key) {
        Some(value) => Ok(Some(value.clone())),
        None if optional == Some(true) => Ok(None),
        None => Err(Error::MissingKey {
            kind,
            name: name.to_owned(),
            key: key.to_owned(),
        }),
    }
}

/// The downward API: a pod field by its `fieldPath`, shared by env and downwardAPI volumes.
pub fn pod_field(pod: &Pod, path: &str, addresses: Addresses) -> Result<String, Error> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_entry = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref()?.get(key).cloned().unwrap_or_default())
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => Some(format_map(meta.labels.as_ref())),
        "metadata.annotations" => Some(format_map(meta.annotations.as_ref())),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(addresses.pod_ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(addresses.host_ip.to_string()),
        _ => map_entry(&meta.labels, "metadata.labels['")
            .or_else(|| map_entry(&meta.annotations, "metadata.annotations['"))
            .map(Some)
            .ok_or_else(|| Error::UnsupportedField(path.to_owned()))?,
    };
    Ok(value.unwrap_or_default())
}

/// `key="value"` lines, the downward API's rendering of labels and annotations.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect()
}

/// Kubernetes' `$(VAR)` expansion: `$$` is a literal `$`; unknown or unterminated references
/// stay as written.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(')
            && let Some(end) = tail.find(')')
        {
            let name = &tail[..end];
            match lookup(name) {
                Some(value) => out.push_str(value),
                None => out.push_str(&rest[pos..pos + 3 + end]),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec,
        SecretEnvSource,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn expands_like_kubernetes() {
        let lookup = vars(&[("A", "1"), ("B", "two")]);
        assert_eq!(expand("x$(A)y$(B)", &lookup), "x1ytwo");
        assert_eq!(expand("$(MISSING)", &lookup), "$(MISSING)");
        assert_eq!(expand("$$(A) costs $5", &lookup), "$(A) costs $5");
        assert_eq!(expand("$(A", &lookup), "$(A");
        assert_eq!(expand("end$", &lookup), "end$");
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("ns".into()),
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                hostname: Some("web-0-host".into()),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    const ADDRESSES: Addresses = Addresses {
        pod_ip: Ipv4Addr::new(10, 244, 0, 5),
        host_ip: Ipv4Addr::new(10, 244, 255, 254),
    };

    fn plain(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(source),
        }
    }

    #[test]
    fn builds_env_in_order_with_downward_api_and_references() {
        let container = Container {
            env_from: Some(vec![EnvFromSource {
                prefix: Some("S_".into()),
                secret_ref: Some(SecretEnvSource {
                    name: "creds".into(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            }]),
            env: Some(vec![
                from(
                    "POD_IP",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    },
                ),
                from(
                    "APP",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.labels['app']".into(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    },
                ),
                plain("URL", "redis://$(POD_IP):6379"),
                plain("HOME", "/data"),
            ]),
            ..Container::default()
        };
        let sources = Sources {
            secrets: BTreeMap::from([(
                "creds".into(),
                BTreeMap::from([("PASSWORD".into(), "hunter2".into())]),
            )]),
            ..Sources::default()
        };
        let env = build(&pod(), &container, ADDRESSES, &sources, &[]).unwrap();
        let get = |k: &str| get(&env, k).map(str::to_owned);
        assert_eq!(get("HOSTNAME").as_deref(), Some("web-0-host"));
        assert_eq!(get("S_PASSWORD").as_deref(), Some("hunter2"));
        assert_eq!(get("APP").as_deref(), Some("web"));
        assert_eq!(get("URL").as_deref(), Some("redis://10.244.0.5:6379"));
        assert_eq!(get("HOME").as_deref(), Some("/data"));
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);
    }

    #[test]
    fn missing_references_fail_unless_optional() {
        let mut selector = ConfigMapKeySelector {
            name: "cfg".into(),
            key: "k".into(),
            optional: None,
        };
        let container = |selector: ConfigMapKeySelector| Container {
            env: Some(vec![from(
                "X",
                EnvVarSource {
                    config_map_key_ref: Some(selector),
                    ..EnvVarSource::default()
                },
            )]),
            ..Container::default()
        };
        let sources = Sources::default();
        assert_eq!(
            build(
                &pod(),
                &container(selector.clone()),
                ADDRESSES,
                &sources,
                &[]
            ),
            Err(Error::MissingSource {
                kind: "configmap",
                name: "cfg".into()
            })
        );
        selector.optional = Some(true);
        let env = build(&pod(), &container(selector), ADDRESSES, &sources, &[]).unwrap();
        assert!(get(&env, "X").is_none());
    }

    #[test]
    fn argv_falls_back_to_the_image_command_and_expands_args() {
        let env = vec![("PORT".to_owned(), "7000".to_owned())];
        let container = Container {
            args: Some(vec!["--port".into(), "$(PORT)".into()]),
            ..Container::default()
        };
        assert_eq!(
            argv(&container, &["redis-server"], &env),
            ["redis-server", "--port", "7000"]
        );
        let container = Container {
            command: Some(vec!["sh".into(), "-c".into(), "echo $$HOME".into()]),
            ..Container::default()
        };
        assert_eq!(
            argv(&container, &["redis-server"], &env),
            ["sh", "-c", "echo $HOME"]
        );
    }

    #[test]
    fn unknown_field_paths_are_refused() {
        assert_eq!(
            pod_field(&pod(), "spec.nope", ADDRESSES),
            Err(Error::UnsupportedField("spec.nope".into()))
        );
        assert_eq!(
            pod_field(&pod(), "metadata.labels", ADDRESSES).unwrap(),
            "app=\"web\"\n"
        );
    }
}
