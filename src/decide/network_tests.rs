//! Rows for the NetworkPolicy decision: every pairing of the spec, the cache and the actor's
//! own last write.

use super::*;
use crate::resources::fixtures::instance;
use crate::resources::network_policy;

/// The desired policy as the API server would hold it, at `version`, with `uid`.
fn stored(desired: &NetworkPolicy, uid: &str, version: u64) -> Arc<CachedNetworkPolicy> {
    let mut policy = desired.clone();
    policy.metadata.uid = Some(uid.to_owned());
    policy.metadata.resource_version = Some(version.to_string());
    Arc::new(CachedNetworkPolicy::from(&policy))
}

#[test]
fn the_policy_is_applied_deleted_or_kept_as_spec_cache_and_own_write_say() {
    let desired = network_policy(&instance(&[]), None);
    let mut other = desired.clone();
    other.spec.as_mut().unwrap().ingress = None;
    let same = stored(&desired, "a", 10);
    let newer = stored(&desired, "a", 12);
    let drifted = stored(&other, "a", 11);
    let recreated = stored(&desired, "b", 13);
    let drifted_since = stored(&other, "a", 14);
    let applied = PolicyWrite::Applied(stored(&desired, "a", 12));
    let applied_old = PolicyWrite::Applied(stored(&desired, "a", 9));
    let deleted = PolicyWrite::Deleted("a".into());
    let on = Some(&desired);
    let apply = |over| PolicyAct::Apply {
        desired: &desired,
        over,
    };
    let keep = PolicyAct::Keep;
    // (row, desired, cached, own write, act, forget the write)
    let table: [(
        &str,
        _,
        Option<&CachedNetworkPolicy>,
        Option<&PolicyWrite>,
        _,
        _,
    ); 12] = [
        ("enabled, missing", on, None, None, apply(None), false),
        (
            "enabled, drifted",
            on,
            Some(&drifted),
            None,
            apply(Some(&drifted)),
            true,
        ),
        ("enabled, as desired", on, Some(&same), None, keep, true),
        (
            "enabled, drifted in a cache behind our apply: ours is what is there",
            on,
            Some(&drifted),
            Some(&applied),
            keep,
            false,
        ),
        (
            "enabled, missing from a cache behind our apply",
            on,
            None,
            Some(&applied),
            keep,
            false,
        ),
        (
            "enabled, cache caught up with our apply and drifted since",
            on,
            Some(&drifted_since),
            Some(&applied),
            apply(Some(&drifted_since)),
            true,
        ),
        (
            "enabled, cache newer than an older write of ours",
            on,
            Some(&newer),
            Some(&applied_old),
            keep,
            true,
        ),
        (
            "disabled, present",
            None,
            Some(&same),
            None,
            PolicyAct::Delete(&same),
            true,
        ),
        (
            "disabled, already deleted by us, cache behind",
            None,
            Some(&same),
            Some(&deleted),
            keep,
            false,
        ),
        (
            "disabled, someone created it again after our delete",
            None,
            Some(&recreated),
            Some(&deleted),
            PolicyAct::Delete(&recreated),
            true,
        ),
        ("disabled, absent", None, None, None, keep, true),
        (
            "disabled, cache shows our delete",
            None,
            None,
            Some(&deleted),
            keep,
            true,
        ),
    ];
    for (row, desired, cached, written, act, forget) in table {
        let view = PolicyView {
            desired,
            cached,
            written,
        };
        assert_eq!(network_step(&view), PolicyStep { act, forget }, "{row}");
    }
}
