//! Rows for the credentials decision: the Secrets as read, the actor's memory, and what is
//! created, written, brought in line and told.

use super::*;
use crate::auth::generated_secret_name;
use crate::crd::AuthUser;
use crate::resources::fixtures::instance;
use crate::resources::{CachedPodStatus, generated_auth_secret};

/// What a row starts from.
#[derive(Clone)]
struct World {
    instance: RedisInstance,
    /// `<name>-operator` is there (else missing, with fresh passwords drawn).
    system: bool,
    /// `<name>-auth` is there (else missing, with a fresh password drawn).
    generated: bool,
    /// For each user the spec names: its Secret is there.
    named: Vec<bool>,
    acl: Acl,
    recorded: Recorded,
    missing_told: Vec<String>,
    requirepass_told: bool,
}

/// The ACL Secret as read.
#[derive(Clone, Copy)]
enum Acl {
    Missing,
    /// Holding another file, at resourceVersion 7.
    Stale,
    /// Holding the file the Secrets make.
    Current,
}

/// The fingerprint the pods were brought in line with.
#[derive(Clone, Copy)]
enum Recorded {
    Nothing,
    Other,
    Current,
}

impl World {
    /// Auth on, every owned Secret there, the ACL Secret current and the pods in line.
    fn settled() -> Self {
        World {
            instance: instance(&[]),
            system: true,
            generated: true,
            named: Vec::new(),
            acl: Acl::Current,
            recorded: Recorded::Current,
            missing_told: Vec::new(),
            requirepass_told: false,
        }
    }

    fn with(mut self, change: impl FnOnce(&mut World)) -> Self {
        change(&mut self);
        self
    }

    /// The spec names `alice` (Secret `alice-pw`) and `default` (Secret `default-pw`).
    fn named(self, present: [bool; 2]) -> Self {
        self.with(|w| {
            w.instance.spec.auth.users = ["alice", "default"]
                .iter()
                .map(|name| AuthUser {
                    name: (*name).into(),
                    password_secret: format!("{name}-pw"),
                    rules: "~* +@all".into(),
                })
                .collect();
            w.named = present.to_vec();
        })
    }

    fn seeded(self) -> Self {
        self.with(|w| {
            w.instance.spec.config = crate::config::config_of(&[("requirepass", "old-secret")]);
        })
    }
}

fn secret(from: k8s_openapi::api::core::v1::Secret, version: &str) -> Arc<CachedSecret> {
    let mut from = from;
    from.metadata.resource_version = Some(version.into());
    Arc::new(CachedSecret::from(&from))
}

fn password_secret(name: &str, password: &str) -> Arc<CachedSecret> {
    let mut from = generated_auth_secret(&instance(&[]), password);
    from.metadata.name = Some(name.into());
    secret(from, "3")
}

fn running(name: &str, ip: Option<&str>, deleting: bool) -> Arc<CachedPod> {
    let mut pod = CachedPod::default();
    pod.metadata.name = Some(name.into());
    if deleting {
        pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
    }
    pod.status = Some(CachedPodStatus {
        pod_ip: ip.map(str::to_owned),
        ..CachedPodStatus::default()
    });
    Arc::new(pod)
}

/// The pods every row runs with: two running, one without an IP yet, one going away.
fn pods() -> Vec<Arc<CachedPod>> {
    vec![
        running("redis-example-0", Some("10.0.0.1"), false),
        running("redis-example-1", Some("10.0.0.2"), false),
        running("redis-example-2", None, false),
        running("redis-example-3", Some("10.0.0.4"), true),
    ]
}

/// Every password the rows hold, none of which a plan's `Debug` or an Event may show.
const PASSWORDS: [&str; 8] = [
    "op-pw",
    "repl-pw",
    "fresh-op",
    "fresh-repl",
    "fresh-gen",
    "gen-pw",
    "old-secret",
    "-topsecret",
];

/// Whether `shown` holds `password`, as text or as the bytes a `Secret`'s `Debug` lists.
fn shows(shown: &str, password: &str) -> bool {
    let bytes: Vec<String> = password.bytes().map(|b| b.to_string()).collect();
    shown.contains(password) || shown.contains(&bytes.join(", "))
}

/// The passwords of `<name>-operator` as read, and those drawn for it when missing.
fn passwords() -> (SystemPasswords, SystemPasswords) {
    let of = |operator: &str, replication: &str| SystemPasswords {
        operator: operator.into(),
        replication: replication.into(),
    };
    (of("op-pw", "repl-pw"), of("fresh-op", "fresh-repl"))
}

/// The decision for `world`, in words.
fn decided(world: &World) -> String {
    let instance = &world.instance;
    let (read, fresh) = passwords();
    let system = match world.system {
        true => Owned::Read(&read),
        false => Owned::Missing(&fresh),
    };
    let generated_secret = secret(generated_auth_secret(instance, "gen-pw"), "2");
    let generated = instance
        .spec
        .auth
        .users
        .is_empty()
        .then(|| match world.generated {
            true => Owned::Read(generated_secret.as_ref()),
            false => Owned::Missing("fresh-gen"),
        });
    let named: Vec<Option<Arc<CachedSecret>>> = world
        .named
        .iter()
        .zip(&instance.spec.auth.users)
        .map(|(there, user)| {
            there.then(|| {
                password_secret(&user.password_secret, &format!("{}-topsecret", user.name))
            })
        })
        .collect();
    let pods = pods();
    let first = AuthView {
        instance,
        system,
        generated,
        named: &named,
        acl: None,
        recorded: None,
        pods: &pods,
        missing_told: &world.missing_told,
        requirepass_told: world.requirepass_told,
    };
    // What the Secrets make: the file and fingerprint of a first pass with nothing written.
    let (file, fingerprint) = match auth_step(&first) {
        AuthStep::Run(plan) => match (plan.acl, plan.sync) {
            (Some(write), Some(sync)) => (Some(write.secret), Some(sync.fingerprint)),
            _ => (None, None),
        },
        _ => (None, None),
    };
    let acl = match world.acl {
        Acl::Missing => None,
        Acl::Stale => Some(secret(acl_secret(instance, "user old on", None), "7")),
        Acl::Current => file.map(|file| secret(file, "8")),
    };
    let recorded = match world.recorded {
        Recorded::Nothing => None,
        Recorded::Other => Some("an older file".to_owned()),
        Recorded::Current => fingerprint,
    };
    let view = AuthView {
        acl: acl.as_deref(),
        recorded: recorded.as_deref(),
        ..first
    };
    let decided = auth_step(&view);
    let writes = decided.is_write();
    match decided {
        AuthStep::Off => {
            assert!(!writes, "off writes nothing");
            "Off".into()
        }
        AuthStep::Run(plan) => {
            let shown = format!("{plan:?}");
            for password in PASSWORDS {
                assert!(!shows(&shown, password), "{password} shown in {shown}");
            }
            // The operator logs in with the passwords of its Secret, as read or as created.
            let operator = if world.system { &read } else { &fresh };
            assert_eq!(
                plan.access.login,
                Some(Credentials {
                    user: crate::auth::OPERATOR_USER.into(),
                    password: operator.operator.clone(),
                })
            );
            let mut words = vec!["Run".to_owned()];
            if !plan.create.is_empty() {
                let names: Vec<String> = plan.create.iter().map(|s| s.name_any()).collect();
                words.push(format!("create={}", names.join(",")));
            }
            for told in &plan.tell {
                words.push(format!("tell={}", told.reason));
            }
            if !plan.missing.is_empty() {
                words.push(format!("missing={}", plan.missing.join(",")));
            }
            if plan.requirepass_told {
                words.push("requirepass-told".into());
            }
            if let Some(write) = &plan.acl {
                let version = write.secret.metadata.resource_version.as_deref();
                words.push(match (write.create, version) {
                    (true, _) => "acl=create".into(),
                    (false, Some(v)) => format!("acl=apply@{v}"),
                    (false, None) => "acl=apply".into(),
                });
            }
            if let Some(sync) = &plan.sync {
                let names: Vec<String> = sync.pods.iter().map(|(p, _)| p.name_any()).collect();
                let logins: Vec<String> = sync
                    .logins
                    .iter()
                    .map(|l| l.as_ref().map_or("none".into(), |c| c.user.clone()))
                    .collect();
                words.push(format!("sync={} as={}", names.join(","), logins.join(",")));
            }
            if plan.wake != Duration::MAX {
                words.push(format!("wake={:?}", plan.wake));
            }
            let acts = ["create=", "acl=", "sync="];
            let acting = words.iter().any(|w| acts.iter().any(|a| w.starts_with(a)));
            assert_eq!(writes, acting, "{words:?}");
            words.join(" ")
        }
    }
}

#[test]
fn credentials_are_created_written_brought_in_line_and_told_as_the_secrets_say() {
    let settled = World::settled();
    let both = "redis-example-0,redis-example-1";
    let table = [
        ("settled", settled.clone(), "Run".to_owned()),
        (
            "auth disabled",
            settled
                .clone()
                .with(|w| w.instance.spec.auth.disabled = true),
            "Off".into(),
        ),
        (
            "a new instance: its Secrets created, then the ACL Secret, the pods brought in line",
            settled.clone().with(|w| {
                w.system = false;
                w.generated = false;
                w.acl = Acl::Missing;
                w.recorded = Recorded::Nothing;
            }),
            format!(
                "Run create=redis-example-operator,redis-example-auth acl=create \
                 sync={both} as=redis-operator,default,none"
            ),
        ),
        (
            "the generated Secret deleted: created again, the file follows",
            settled.clone().with(|w| {
                w.generated = false;
                w.acl = Acl::Stale;
                w.recorded = Recorded::Other;
            }),
            format!(
                "Run create=redis-example-auth acl=apply@7 sync={both} as=redis-operator,default,none"
            ),
        ),
        (
            "a new instance: the ACL Secret created, the running pods brought in line",
            settled.clone().with(|w| {
                w.acl = Acl::Missing;
                w.recorded = Recorded::Nothing;
            }),
            format!("Run acl=create sync={both} as=redis-operator,default,none"),
        ),
        (
            "the ACL Secret holds another file: applied over the version read",
            settled.clone().with(|w| {
                w.acl = Acl::Stale;
                w.recorded = Recorded::Other;
            }),
            format!("Run acl=apply@7 sync={both} as=redis-operator,default,none"),
        ),
        (
            "the file is written but the pods have another one (a rotation after a crash)",
            settled.clone().with(|w| w.recorded = Recorded::Other),
            format!("Run sync={both} as=redis-operator,default,none"),
        ),
        (
            "status lost the fingerprint: the pods are brought in line again",
            settled.clone().with(|w| w.recorded = Recorded::Nothing),
            format!("Run sync={both} as=redis-operator,default,none"),
        ),
        (
            "upgraded from requirepass: its password moved to a Secret, told, tried as default",
            settled.clone().seeded().with(|w| {
                w.generated = false;
                w.recorded = Recorded::Nothing;
            }),
            format!(
                "Run create=redis-example-auth tell=PasswordMoved requirepass-told sync={both} \
                 as=redis-operator,default,default,none"
            ),
        ),
        (
            "upgraded from requirepass, its Secret made by an earlier step: told",
            settled.clone().seeded(),
            "Run tell=PasswordMoved requirepass-told".into(),
        ),
        (
            "requirepass told already",
            settled.clone().seeded().with(|w| w.requirepass_told = true),
            "Run requirepass-told".into(),
        ),
        (
            "named users, a Secret missing: told, nothing written, looked at again",
            settled.clone().named([true, false]),
            "Run tell=SecretMissing missing=default-pw wake=5s".into(),
        ),
        (
            "named users, the same Secret missing, told already",
            settled
                .clone()
                .named([true, false])
                .with(|w| w.missing_told = vec!["default-pw".into()]),
            "Run missing=default-pw wake=5s".into(),
        ),
        (
            "named users, another Secret missing than told",
            settled
                .clone()
                .named([false, false])
                .with(|w| w.missing_told = vec!["default-pw".into()]),
            "Run tell=SecretMissing missing=alice-pw,default-pw wake=5s".into(),
        ),
        (
            "named users all there, the generated Secret not needed",
            settled.clone().named([true, true]).with(|w| {
                w.generated = false;
                w.recorded = Recorded::Nothing;
            }),
            format!("Run sync={both} as=redis-operator,default,none"),
        ),
    ];
    for (row, world, want) in table {
        assert_eq!(decided(&world), want, "{row}");
    }
}

#[test]
fn the_notes_name_the_secrets_and_never_a_password() {
    let world = World::settled().named([false, true]);
    let seeded = World::settled().seeded();
    for (world, words) in [
        (world, vec!["alice-pw".to_owned(), "team-a".into()]),
        (
            seeded,
            vec![generated_secret_name(&instance(&[])), "now lives in".into()],
        ),
    ] {
        let pods = pods();
        let (system, _) = passwords();
        let named: Vec<_> = world.named.iter().map(|_| None).collect();
        // Created now, from `spec.config.requirepass`.
        let generated = world
            .instance
            .spec
            .auth
            .users
            .is_empty()
            .then_some(Owned::Missing("fresh-gen"));
        let view = AuthView {
            instance: &world.instance,
            system: Owned::Read(&system),
            generated,
            named: &named,
            acl: None,
            recorded: None,
            pods: &pods,
            missing_told: &[],
            requirepass_told: false,
        };
        let AuthStep::Run(plan) = auth_step(&view) else {
            panic!("every owned Secret is there");
        };
        let note = &plan.tell.first().expect("one Event").note;
        for word in words {
            assert!(note.contains(&word), "{note:?} names {word}");
        }
        assert!(
            PASSWORDS.iter().all(|secret| !shows(note, secret)),
            "{note:?}"
        );
    }
}

#[test]
fn the_fingerprint_is_remembered_only_once_every_pod_is_in_line() {
    let world = World::settled().with(|w| w.recorded = Recorded::Nothing);
    let (system, _) = passwords();
    let generated = secret(generated_auth_secret(&world.instance, "gen-pw"), "2");
    let with_pods = pods();
    let view = AuthView {
        instance: &world.instance,
        system: Owned::Read(&system),
        generated: Some(Owned::Read(&generated)),
        named: &[],
        acl: None,
        recorded: None,
        pods: &with_pods,
        missing_told: &[],
        requirepass_told: false,
    };
    let AuthStep::Run(plan) = auth_step(&view) else {
        panic!("every owned Secret is there");
    };
    let sync = plan
        .sync
        .expect("nothing recorded: the pods are brought in line");
    assert_eq!(synced(&sync, 1), Synced::Retry(Duration::from_secs(2)));
    let Synced::InLine { fingerprint, tell } = synced(&sync, 0) else {
        panic!("all in line");
    };
    assert_eq!(fingerprint, sync.fingerprint);
    let tell = tell.expect("pods were changed live: told");
    assert_eq!((tell.reason, tell.warning), ("UsersApplied", false));
    assert!(
        tell.note.contains("redis-example-0, redis-example-1"),
        "{}",
        tell.note
    );
    let no_pods = UsersSync {
        pods: Vec::new(),
        ..sync
    };
    assert!(
        matches!(synced(&no_pods, 0), Synced::InLine { tell: None, .. }),
        "no pod changed: nothing to tell"
    );
}

#[test]
fn the_secrets_read_follow_the_spec() {
    let on = instance(&[]);
    let off = World::settled()
        .with(|w| w.instance.spec.auth.disabled = true)
        .instance;
    let named = World::settled().named([true, true]).instance;
    assert_eq!(auth_reads(&off), AuthReads::Off);
    assert_eq!(auth_reads(&on), AuthReads::Secrets { generated: true });
    assert_eq!(auth_reads(&named), AuthReads::Secrets { generated: false });
}
