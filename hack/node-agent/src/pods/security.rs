//! Who a container of an image runs as and what it may do: the container's securityContext over
//! the pod's over the image's USER, as the kubelet and a container runtime decide it.

use k8s_openapi::api::core::v1::{Container, Pod};

/// The securityContext cannot be honoured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// `runAsNonRoot` with uid 0 (the kubelet's message).
    #[error(
        "container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})"
    )]
    RunsAsRoot { pod: String, container: String },
    /// The image names its user; resolving a name needs the image's /etc/passwd.
    #[error("image user {0:?} is not numeric (uid or uid:gid); user names are not supported")]
    NamedUser(String),
    /// A uid or gid out of range.
    #[error("invalid {0} {1}")]
    OutOfRange(&'static str, i64),
}

/// How the container's process is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// `allowPrivilegeEscalation: false`: the process and its children gain no privileges
    /// through setuid files (no_new_privs).
    pub no_new_privs: bool,
    /// `readOnlyRootFilesystem`: the root is mounted read-only (volumes keep their own mode).
    pub read_only_root: bool,
    /// The pod's `fsGroup`: a supplementary group of the process, and the group that owns its
    /// writable volumes.
    pub fs_group: Option<u32>,
    /// `capabilities.drop` holds `ALL`: no capability is left, not even in the bounding set.
    pub drop_all_capabilities: bool,
}

impl Identity {
    /// Root with every default: how a host image's process starts without a securityContext.
    pub const ROOT: Identity = Identity {
        uid: 0,
        gid: 0,
        no_new_privs: false,
        read_only_root: false,
        fs_group: None,
        drop_all_capabilities: false,
    };

    pub fn is_plain_root(&self) -> bool {
        *self == Self::ROOT
    }
}

/// The container's identity: `runAsUser`/`runAsGroup` of the container, else of the pod, else
/// the image's `uid[:gid]`, else root; `runAsNonRoot` refuses uid 0.
pub fn identity(pod: &Pod, container: &Container, image_user: &str) -> Result<Identity, Error> {
    let pod_context = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let context = container.security_context.as_ref();
    let (image_uid, image_gid) = numeric_user(image_user)?;
    let uid = match context
        .and_then(|c| c.run_as_user)
        .or(pod_context.and_then(|c| c.run_as_user))
    {
        Some(uid) => id("runAsUser", uid)?,
        None => image_uid.unwrap_or(0),
    };
    let gid = match context
        .and_then(|c| c.run_as_group)
        .or(pod_context.and_then(|c| c.run_as_group))
    {
        Some(gid) => id("runAsGroup", gid)?,
        None => image_gid.unwrap_or(0),
    };
    let non_root = context
        .and_then(|c| c.run_as_non_root)
        .or(pod_context.and_then(|c| c.run_as_non_root))
        == Some(true);
    if non_root && uid == 0 {
        return Err(Error::RunsAsRoot {
            pod: pod.metadata.name.clone().unwrap_or_default(),
            container: container.name.clone(),
        });
    }
    let fs_group = pod_context
        .and_then(|c| c.fs_group)
        .map(|gid| id("fsGroup", gid))
        .transpose()?;
    let dropped = context
        .and_then(|c| c.capabilities.as_ref())
        .and_then(|c| c.drop.as_deref())
        .unwrap_or_default();
    Ok(Identity {
        uid,
        gid,
        no_new_privs: context.and_then(|c| c.allow_privilege_escalation) == Some(false),
        read_only_root: context.and_then(|c| c.read_only_root_filesystem) == Some(true),
        fs_group,
        drop_all_capabilities: dropped.iter().any(|c| c == "ALL"),
    })
}

/// `""`, `uid` or `uid:gid`.
fn numeric_user(user: &str) -> Result<(Option<u32>, Option<u32>), Error> {
    if user.is_empty() {
        return Ok((None, None));
    }
    let named = || Error::NamedUser(user.to_owned());
    let (uid, gid) = match user.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (user, None),
    };
    let uid = uid.parse().map_err(|_| named())?;
    let gid = gid.map(str::parse).transpose().map_err(|_| named())?;
    Ok((Some(uid), gid))
}

fn id(field: &'static str, value: i64) -> Result<u32, Error> {
    u32::try_from(value).map_err(|_| Error::OutOfRange(field, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, PodSpec, SecurityContext};

    fn pod(context: Option<PodSecurityContext>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                security_context: context,
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn container(context: Option<SecurityContext>) -> Container {
        Container {
            name: "c".into(),
            security_context: context,
            ..Container::default()
        }
    }

    #[test]
    fn the_container_overrides_the_pod_which_overrides_the_image() {
        let bare = (pod(None), container(None));
        let id = identity(&bare.0, &bare.1, "65532:65532").unwrap();
        assert_eq!((id.uid, id.gid), (65532, 65532));
        assert_eq!((id.no_new_privs, id.read_only_root), (false, false));
        let id = identity(&bare.0, &bare.1, "1000").unwrap();
        assert_eq!((id.uid, id.gid), (1000, 0));
        let id = identity(&bare.0, &bare.1, "").unwrap();
        assert_eq!((id.uid, id.gid), (0, 0));

        let pod_level = pod(Some(PodSecurityContext {
            run_as_user: Some(2000),
            run_as_group: Some(3000),
            ..PodSecurityContext::default()
        }));
        let id = identity(&pod_level, &bare.1, "65532:65532").unwrap();
        assert_eq!((id.uid, id.gid), (2000, 3000));
        let container_level = container(Some(SecurityContext {
            run_as_user: Some(4000),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            ..SecurityContext::default()
        }));
        let id = identity(&pod_level, &container_level, "65532:65532").unwrap();
        assert_eq!((id.uid, id.gid), (4000, 3000));
        assert_eq!((id.no_new_privs, id.read_only_root), (true, true));
        assert_eq!((id.fs_group, id.drop_all_capabilities), (None, false));
        assert!(identity(&bare.0, &bare.1, "").unwrap().is_plain_root());
    }

    #[test]
    fn fs_group_and_dropped_capabilities_are_read() {
        let with_group = pod(Some(PodSecurityContext {
            run_as_user: Some(999),
            run_as_group: Some(999),
            fs_group: Some(1999),
            ..PodSecurityContext::default()
        }));
        let drop_all = container(Some(SecurityContext {
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }));
        let id = identity(&with_group, &drop_all, "").unwrap();
        assert_eq!((id.uid, id.gid, id.fs_group), (999, 999, Some(1999)));
        assert!(id.drop_all_capabilities);
        assert!(!id.is_plain_root());
        let negative = pod(Some(PodSecurityContext {
            fs_group: Some(-1),
            ..PodSecurityContext::default()
        }));
        assert_eq!(
            identity(&negative, &container(None), ""),
            Err(Error::OutOfRange("fsGroup", -1))
        );
    }

    #[test]
    fn run_as_non_root_refuses_root_and_names_are_refused() {
        let non_root = pod(Some(PodSecurityContext {
            run_as_non_root: Some(true),
            ..PodSecurityContext::default()
        }));
        assert!(identity(&non_root, &container(None), "65532").is_ok());
        let err = identity(&non_root, &container(None), "").unwrap_err();
        assert!(matches!(err, Error::RunsAsRoot { .. }), "{err}");
        let root_by_container = container(Some(SecurityContext {
            run_as_user: Some(0),
            ..SecurityContext::default()
        }));
        assert!(identity(&non_root, &root_by_container, "65532").is_err());
        assert_eq!(
            identity(&pod(None), &container(None), "nobody"),
            Err(Error::NamedUser("nobody".into()))
        );
        assert_eq!(
            identity(&pod(None), &container(None), "1:staff"),
            Err(Error::NamedUser("1:staff".into()))
        );
    }
}
