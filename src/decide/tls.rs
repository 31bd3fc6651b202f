//! The TLS part of a step: when to read the `spec.tls` Secret, what to tell about it, which pods
//! to make serve its certificate, and when to look again.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;

use super::{Notice, is_ready};
use crate::crd::RedisInstance;
use crate::resources::{CachedPod, TLS_ANNOTATION};
use crate::tls::material::short;

/// How often the Secret is read again when the metadata watch shows no change: a safety net,
/// since a change of its resourceVersion has it read at the step the watch gives.
const SECRET_REREAD: Duration = Duration::from_secs(300);
/// How soon a Secret the API server did not return is asked for again.
const READ_RETRY: Duration = Duration::from_secs(5);
/// How often every pod's served certificate is checked once all served the Secret's.
const SERVED_RECHECK: Duration = Duration::from_secs(60);
/// How soon a pod that does not serve the Secret's certificate yet is looked at again: its
/// volume may not show the new files yet.
const RELOAD_RETRY: Duration = Duration::from_secs(2);

/// What the actor knows of the Secret, for deciding whether to read it.
#[derive(Debug, Clone, Copy)]
pub struct SecretView<'a> {
    /// The resourceVersion the metadata watch shows.
    pub watched: Option<&'a str>,
    /// The resourceVersion the client was built from.
    pub built: Option<&'a str>,
    /// How long ago the Secret was last read; `None`: never.
    pub read_ago: Option<Duration>,
}

/// Whether the Secret is read this step: the watch shows another version than the one built,
/// or the safety net's interval passed (or it was never read).
pub fn secret_read_due(view: &SecretView<'_>) -> bool {
    let moved = view.watched.is_some() && view.watched != view.built;
    moved || view.read_ago.is_none_or(|ago| ago >= SECRET_REREAD)
}

/// What a Secret just read asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretRead {
    /// The API server has no such Secret: tell (see [`tell_problem`]).
    Missing,
    /// The client was built from this very version: keep it.
    Unchanged,
    /// Another version: build the client from it.
    Build,
}

/// What the Secret as read asks for: `found` is its resourceVersion (`None`: the API server has
/// no such Secret).
pub fn secret_read(found: Option<Option<&str>>, built: Option<&str>) -> SecretRead {
    match found {
        None => SecretRead::Missing,
        Some(Some(version)) if Some(version) == built => SecretRead::Unchanged,
        Some(_) => SecretRead::Build,
    }
}

/// The problem of a Secret `name` the API server does not have.
pub fn secret_missing_problem(name: &str) -> String {
    format!(
        "spec.tls names Secret {name}, which does not exist: the pods cannot start until it does"
    )
}

/// The Warning about an unusable Secret, unless this very problem was told last: the pods keep
/// what they serve, so telling it again at every read would only repeat it.
pub fn tell_problem(problem: &str, told: Option<&str>) -> Option<Notice> {
    (told != Some(problem)).then(|| Notice {
        warning: true,
        reason: "TLSSecretInvalid",
        action: "LoadCertificate",
        note: format!("{problem}; the pods keep the certificate they serve"),
        fact: None,
    })
}

/// What the reload decision reads.
#[derive(Debug, Clone, Copy)]
pub struct ServedView<'a> {
    /// `spec.tls` is set.
    pub enabled: bool,
    /// How long ago the Secret was last read; `None`: never (the API did not answer).
    pub read_ago: Option<Duration>,
    /// The fingerprint of the certificate the client was built from; `None`: none built yet.
    pub wanted: Option<&'a str>,
    /// The fingerprint every ready pod was last seen serving, and how long ago.
    pub verified: Option<(&'a str, Duration)>,
    /// The instance's pods.
    pub pods: &'a [Arc<CachedPod>],
}

/// What the reload part of a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Reload {
    /// Nothing to check now: look again after the duration.
    Wait(Duration),
    /// Dial each of these pods (name, IP) and make those serving another certificate reload;
    /// then see [`reloaded`].
    Check(Vec<(String, String)>),
}

/// Whether to check the pods' served certificate, and which.
pub fn reload(view: &ServedView<'_>) -> Reload {
    if !view.enabled {
        return Reload::Wait(Duration::MAX);
    }
    let Some(wanted) = view.wanted else {
        return Reload::Wait(reread_in(view.read_ago));
    };
    if let Some((verified, ago)) = view.verified
        && verified == wanted
        && ago < SERVED_RECHECK
    {
        return Reload::Wait(reread_in(view.read_ago).min(SERVED_RECHECK - ago));
    }
    let pods = view
        .pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && is_ready(p)
                // Started with TLS: one started before speaks plain RESP until replaced.
                && p.annotations.get(TLS_ANNOTATION).is_some()
        })
        .filter_map(|p| Some((p.name_any(), p.status.as_ref()?.pod_ip.clone()?)))
        .collect();
    Reload::Check(pods)
}

/// When the Secret is due to be read again; never read: soon, not after the safety net's
/// interval.
fn reread_in(read_ago: Option<Duration>) -> Duration {
    read_ago.map_or(READ_RETRY, |ago| SECRET_REREAD.saturating_sub(ago))
}

/// What one pod's answer in a [`Reload::Check`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodReload {
    /// It serves the wanted certificate: nothing to do.
    Serving,
    /// It serves another: make Redis read its files again (`CONFIG SET` of the same paths),
    /// then ask again.
    Reload,
    /// Its certificate was not read: it stays behind until the next check.
    Unread,
}

/// What a pod serving `served` (`None`: not read) asks for, when the Secret's certificate is
/// `wanted`. Asked again after a reload, anything but [`PodReload::Serving`] leaves the pod
/// behind: its volume may not show the new files yet, and Redis then read the old ones again.
pub fn pod_reload(served: Option<&str>, wanted: &str) -> PodReload {
    match served {
        None => PodReload::Unread,
        Some(served) if served == wanted => PodReload::Serving,
        Some(_) => PodReload::Reload,
    }
}

/// The problem of a Secret whose material builds no client (`error`, which does not name it).
pub fn client_problem(secret: &str, error: &dyn std::fmt::Display) -> String {
    format!("{secret}: {error}")
}

/// What came of checking the pods.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloaded {
    /// Every checked pod serves the wanted certificate: remember it as verified now.
    pub verified: bool,
    /// The Event telling which pods reloaded.
    pub tell: Option<Notice>,
    /// When to look again.
    pub wake: Duration,
}

/// The outcome of a [`Reload::Check`] of `checked` pods: those that `reloaded` and those still
/// `behind` (not reached, reload refused, or serving the old certificate still).
pub fn reloaded(
    instance: &RedisInstance,
    view: &ServedView<'_>,
    checked: usize,
    reloaded: &[String],
    behind: &[String],
) -> Reloaded {
    let wanted = view.wanted.unwrap_or_default();
    let tell = (!reloaded.is_empty()).then(|| {
        let secret = instance
            .spec
            .tls
            .as_ref()
            .map(|t| t.secret_name.as_str())
            .unwrap_or_default();
        let note = format!(
            "{} now serve the certificate of Secret {secret} (SHA-256 {}), reloaded with CONFIG SET, no restart",
            reloaded.join(", "),
            short(wanted)
        );
        Notice::normal("CertificateReloaded", "LoadCertificate", note)
    });
    let reread = reread_in(view.read_ago);
    let (verified, wake) = if checked == 0 {
        // Nothing serves yet (or any more): a pod that starts reads the current files.
        (false, reread)
    } else if behind.is_empty() {
        (true, reread.min(SERVED_RECHECK))
    } else {
        (false, RELOAD_RETRY)
    };
    Reloaded {
        verified,
        tell,
        wake,
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
