//! Rows for the TLS decisions: when the Secret is read, what a read asks for, what is told, and
//! which pods are checked and when.

use super::*;
use crate::decide::pods_fixtures::pod;
use crate::resources::fixtures::instance;

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn the_secret_is_read_when_the_watch_moves_or_the_safety_net_is_due() {
    // (row, watched, built from, read ago, read now)
    let table = [
        ("never read", None, None, None, true),
        (
            "never read, the watch shows it",
            Some("5"),
            None,
            None,
            true,
        ),
        (
            "read, the watch shows the version built",
            Some("5"),
            Some("5"),
            Some(S(10)),
            false,
        ),
        (
            "read, the watch shows another version",
            Some("6"),
            Some("5"),
            Some(S(10)),
            true,
        ),
        (
            "read, the watch shows a version, none built (unusable)",
            Some("6"),
            None,
            Some(S(10)),
            true,
        ),
        (
            "read, the watch knows nothing of it",
            None,
            Some("5"),
            Some(S(10)),
            false,
        ),
        (
            "read, the safety net's interval passed",
            Some("5"),
            Some("5"),
            Some(S(300)),
            true,
        ),
        (
            "read just under the interval",
            Some("5"),
            Some("5"),
            Some(S(299)),
            false,
        ),
    ];
    for (row, watched, built, read_ago, due) in table {
        let view = SecretView {
            watched,
            built,
            read_ago,
        };
        assert_eq!(secret_read_due(&view), due, "{row}");
    }
}

#[test]
fn a_read_secret_builds_a_client_only_from_another_version() {
    // (row, found, built from, what it asks for)
    let table = [
        ("missing", None, Some("5"), SecretRead::Missing),
        (
            "the version built",
            Some(Some("5")),
            Some("5"),
            SecretRead::Unchanged,
        ),
        (
            "another version",
            Some(Some("6")),
            Some("5"),
            SecretRead::Build,
        ),
        ("the first one", Some(Some("6")), None, SecretRead::Build),
        ("no version to compare", Some(None), None, SecretRead::Build),
    ];
    for (row, found, built, want) in table {
        assert_eq!(secret_read(found, built), want, "{row}");
    }
}

#[test]
fn a_problem_with_the_secret_is_told_once_until_another_comes() {
    let problem = secret_missing_problem("redis-tls");
    assert!(problem.contains("redis-tls"), "{problem}");
    let told = tell_problem(&problem, None).expect("a new problem is told");
    assert_eq!((told.reason, told.warning), ("TLSSecretInvalid", true));
    assert!(told.note.starts_with(&problem), "{}", told.note);
    assert_eq!(tell_problem(&problem, Some(&problem)), None, "told already");
    assert!(tell_problem(&problem, Some("redis-tls: no tls.key")).is_some());
}

/// A pod of the instance, ready or not, started with TLS or not, with an IP or not.
fn tls_pod(name: &str, ready: bool, tls: bool, ip: bool, deleting: bool) -> Arc<CachedPod> {
    let mut pod = Arc::unwrap_or_clone(pod(name, "h", "r", ready, None));
    if tls {
        pod.annotations.insert(TLS_ANNOTATION, "true");
    }
    if deleting {
        pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
    }
    if let Some(status) = pod.status.as_mut() {
        status.pod_ip = ip.then(|| format!("10.0.0.{}", name.len()));
    }
    Arc::new(pod)
}

#[test]
fn ready_pods_started_with_tls_are_checked_unless_verified_lately() {
    let pods = vec![
        tls_pod("served", true, true, true, false),
        tls_pod("unready", false, true, true, false),
        tls_pod("plain-resp", true, false, true, false),
        tls_pod("no-ip", true, true, false, false),
        tls_pod("leaving", true, true, true, true),
    ];
    let check = Reload::Check(vec![("served".into(), "10.0.0.6".into())]);
    let view = |enabled, read_ago, wanted, verified| ServedView {
        enabled,
        read_ago,
        wanted,
        verified,
        pods: &pods,
    };
    // (row, view, decided)
    let table = [
        (
            "spec.tls off",
            view(false, Some(S(1)), Some("f"), None),
            Reload::Wait(Duration::MAX),
        ),
        (
            "never read: read again soon",
            view(true, None, None, None),
            Reload::Wait(S(5)),
        ),
        (
            "read, unusable: at the safety net",
            view(true, Some(S(100)), None, None),
            Reload::Wait(S(200)),
        ),
        (
            "never verified",
            view(true, Some(S(100)), Some("f"), None),
            check.clone(),
        ),
        (
            "verified lately",
            view(true, Some(S(100)), Some("f"), Some(("f", S(10)))),
            Reload::Wait(S(50)),
        ),
        (
            "verified lately, the safety net due first",
            view(true, Some(S(290)), Some("f"), Some(("f", S(10)))),
            Reload::Wait(S(10)),
        ),
        (
            "verified a minute ago",
            view(true, Some(S(100)), Some("f"), Some(("f", S(60)))),
            check.clone(),
        ),
        (
            "verified another certificate",
            view(true, Some(S(100)), Some("g"), Some(("f", S(1)))),
            check.clone(),
        ),
    ];
    for (row, view, want) in table {
        assert_eq!(reload(&view), want, "{row}");
    }
}

#[test]
fn a_check_is_verified_only_when_no_pod_is_behind_and_told_when_one_reloaded() {
    let mut ri = instance(&[]);
    ri.spec.tls = Some(crate::crd::TlsSpec {
        secret_name: "redis-tls".into(),
        auth_clients: false,
    });
    let view = ServedView {
        enabled: true,
        read_ago: Some(S(100)),
        wanted: Some("0123456789abcdef"),
        verified: None,
        pods: &[],
    };
    let names = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    // (row, pods checked, reloaded, behind, verified, told, wake)
    let table = [
        (
            "nothing serves TLS",
            0,
            names(&[]),
            names(&[]),
            false,
            false,
            S(200),
        ),
        (
            "all served it already",
            2,
            names(&[]),
            names(&[]),
            true,
            false,
            S(60),
        ),
        (
            "one reloaded, all serve it",
            2,
            names(&["a"]),
            names(&[]),
            true,
            true,
            S(60),
        ),
        (
            "one reloaded, one behind",
            2,
            names(&["a"]),
            names(&["b"]),
            false,
            true,
            S(2),
        ),
        (
            "one not reached",
            2,
            names(&[]),
            names(&["b"]),
            false,
            false,
            S(2),
        ),
    ];
    for (row, checked, done, behind, verified, told, wake) in table {
        let outcome = reloaded(&ri, &view, checked, &done, &behind);
        assert_eq!(
            (outcome.verified, outcome.tell.is_some(), outcome.wake),
            (verified, told, wake),
            "{row}"
        );
        if let Some(event) = outcome.tell {
            assert_eq!(
                (event.reason, event.warning),
                ("CertificateReloaded", false)
            );
            assert!(
                event.note.contains("redis-tls") && event.note.contains("0123456789ab"),
                "{}",
                event.note
            );
        }
    }
}

#[test]
fn a_pod_is_told_to_reload_only_when_it_serves_another_certificate() {
    assert_eq!(pod_reload(Some("new"), "new"), PodReload::Serving);
    assert_eq!(pod_reload(Some("old"), "new"), PodReload::Reload);
    assert_eq!(pod_reload(None, "new"), PodReload::Unread);
    // Read again after the reload: behind unless it serves the wanted one now.
    let took = |served| pod_reload(served, "new") == PodReload::Serving;
    assert!(took(Some("new")));
    assert!(!took(Some("old")), "the volume showed the old files still");
    assert!(!took(None));
}

#[test]
fn a_client_problem_names_the_secret() {
    let problem = client_problem("redis-tls", &"invalid TLS material: bad key");
    assert_eq!(problem, "redis-tls: invalid TLS material: bad key");
}
