//! `diff`'s verdicts, one row per kind of edit, asked of the operator's decision function.

use super::*;
use crate::resources::fixtures::instance;

fn running_on(instance: &RedisInstance) -> Running {
    let rendered = render(&crate::config::effective(instance));
    let hash = template_hash(instance, &rendered);
    Running {
        statefulset: Some(crate::resources::statefulset(instance, &hash, None)),
        config_text: Some(rendered.text),
    }
}

fn live(config: &[(&str, &str)]) -> RedisInstance {
    let mut i = instance(config);
    i.spec.config_update = ConfigUpdate::Live;
    i
}

#[test]
fn each_kind_of_edit_gets_its_verdict() {
    let now = live(&[("maxmemory", "100mb"), ("databases", "16")]);
    let running = running_on(&now);
    assert_eq!(verdict(&now, &running), Verdict::Nothing);
    assert_eq!(
        verdict(
            &live(&[("maxmemory", "200mb"), ("databases", "16")]),
            &running
        ),
        Verdict::Live {
            directives: vec!["maxmemory".into()]
        }
    );
    assert_eq!(
        verdict(
            &live(&[("maxmemory", "200mb"), ("databases", "8")]),
            &running
        ),
        Verdict::Restart {
            forcing: vec!["databases".into()],
            with: vec!["maxmemory".into()],
            strategy: RestartStrategy::RollingUpdate
        }
    );
    let refused = verdict(&live(&[("maxmemory", "lots")]), &running);
    assert!(matches!(&refused, Verdict::Refused(v) if v[0].directive == "maxmemory"));
    assert_eq!(refused.exit_code(), 1);
    assert!(matches!(
        verdict(&now, &Running::default()),
        Verdict::Create { .. }
    ));
}

#[test]
fn diff_never_shows_a_password() {
    let now = live(&[("maxmemory", "100mb")]);
    let running = running_on(&now);
    let mut with_password = live(&[("maxmemory", "100mb"), ("requirepass", "hunter2-pw")]);
    let mut shown = verdict(&with_password, &running).to_string();
    with_password.spec.auth.users = vec![crate::crd::AuthUser {
        name: "app".into(),
        password_secret: "app-pw".into(),
        rules: "+@all".into(),
    }];
    let refused = verdict(&with_password, &running);
    assert_eq!(refused.exit_code(), 1, "requirepass beside spec.auth");
    shown.push_str(&refused.to_string());
    with_password
        .spec
        .config
        .insert("masterauth".into(), "hunter2-pw".into());
    shown.push_str(&verdict(&with_password, &running).to_string());
    assert!(shown.contains("requirepass"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn a_directive_left_out_is_named_removed_and_a_scale_is_told() {
    let now = live(&[("maxmemory", "100mb"), ("databases", "16")]);
    let running = running_on(&now);
    let without = live(&[("databases", "16")]);
    assert_eq!(
        verdict(&without, &running),
        Verdict::Restart {
            forcing: vec!["maxmemory (removed)".into()],
            with: Vec::new(),
            strategy: RestartStrategy::RollingUpdate
        }
    );
    // One pod to three: the pod becomes a primary, which its template says.
    let mut three = now.clone();
    three.spec.replicas = 3;
    let converting = verdict(&three, &running);
    assert!(
        matches!(&converting, Verdict::Restart { forcing, .. } if forcing[0].starts_with("replication")),
        "{converting:?}"
    );
    assert_eq!(
        scale_note(&three, &running, &converting).as_deref(),
        Some("scale 1 -> 3: 2 pod(s) created")
    );
    // Two to three: a replica more, nothing restarted.
    let mut two = now.clone();
    two.spec.replicas = 2;
    let running = running_on(&two);
    assert_eq!(verdict(&three, &running), Verdict::Nothing);
    assert_eq!(
        scale_note(&three, &running, &Verdict::Nothing).as_deref(),
        Some("scale 2 -> 3: 1 pod(s) created, none restarted for it")
    );
    assert_eq!(scale_note(&two, &running, &Verdict::Nothing), None);
    assert_eq!(
        Verdict::RefusedByApi("spec.storage is immutable".into()).exit_code(),
        1
    );
}

#[test]
fn under_restart_every_change_restarts_and_an_image_change_too() {
    let now = instance(&[("maxmemory", "100mb")]);
    let running = running_on(&now);
    let edit = instance(&[("maxmemory", "200mb")]);
    assert_eq!(
        verdict(&edit, &running).to_string(),
        "restart (RollingUpdate): forced by maxmemory\n"
    );
    let mut image = now.clone();
    image.spec.image = "redis:7.2".into();
    assert!(
        matches!(verdict(&image, &running), Verdict::Restart { forcing, .. } if forcing[0] == "image redis:7.2")
    );
}
