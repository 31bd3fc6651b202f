//! The live check's choices, a row each: mark or not, and what a set-back comes to.

use super::*;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

fn hash() -> String {
    "cd".repeat(32)
}

fn read(pod: &str, differs: &[&str], unsure: &[&str]) -> PodRead {
    PodRead {
        pod: pod.into(),
        differs: differs.iter().map(|d| (*d).into()).collect(),
        unsure: unsure.iter().map(|d| (*d).into()).collect(),
    }
}

fn changed(pod: &str, directive: &str) -> PodChange {
    PodChange {
        pod: pod.into(),
        changed: vec![(directive.into(), "1gb".into(), "100mb".into())],
    }
}

#[test]
fn a_drift_the_read_can_name_is_marked_first_and_only_where_a_config_map_is() {
    let drifted = [read("r-0", &["maxmemory"], &[]), read("r-1", &[], &[])];
    let Repair::MarkThenSet(mark) = repair(&drifted, &hash(), None, true, at(10)) else {
        panic!("a drift the read names is marked");
    };
    assert_eq!(
        repair(&drifted, &hash(), None, false, at(10)),
        Repair::NoConfigMap
    );
    // Only a CONFIG SET tells whether an unsure value differs: set, unmarked.
    let unsure = [read("r-0", &[], &["save"])];
    assert_eq!(repair(&unsure, &hash(), None, true, at(10)), Repair::Set);
    assert_eq!(repair(&unsure, &hash(), None, false, at(10)), Repair::Set);
    // The repair Redis refused before is set again unmarked, whenever it is found again.
    let refused = mark.text();
    assert_eq!(
        repair(&drifted, &hash(), Some(&refused), true, at(70)),
        Repair::Set
    );
}

#[test]
fn a_set_back_is_verified_and_a_repair_told_under_its_mark() {
    let drifted = [read("r-0", &["maxmemory"], &[])];
    let marked = repair(&drifted, &hash(), None, true, at(10));
    let Repair::MarkThenSet(mark) = &marked else {
        panic!("marked");
    };
    let changes = [changed("r-0", "maxmemory")];
    let after = after_set_back(SetBack::Done(&changes), &marked, &hash(), false);
    assert!(after.verified);
    let drift = after.repaired.expect("a repair is told");
    assert_eq!(drift.pods, ["r-0"]);
    let told = drift.event;
    assert_eq!(told.reason, "LiveDriftRepaired");
    assert_eq!(told.fact, Some(format!("live drift {}", mark.text())));
    assert_eq!((after.refused_mark, after.not_repaired), (None, None));
    // Unmarked: told as the drift itself, with no fact.
    let after = after_set_back(SetBack::Done(&changes), &Repair::Set, &hash(), false);
    assert_eq!(after.repaired.unwrap().event.fact, None);
    // Nothing changed: verified, nothing told.
    let after = after_set_back(SetBack::Done(&[]), &Repair::Set, &hash(), false);
    assert!(after.verified && after.repaired.is_none());
}

#[test]
fn a_refused_set_back_remembers_its_mark_and_is_told_once_per_live_config() {
    let drifted = [read("r-0", &["maxmemory"], &[])];
    let marked = repair(&drifted, &hash(), None, true, at(10));
    let refused = SetBack::Refused("ERR maxmemory out of range");
    let first = after_set_back(refused, &marked, &hash(), false);
    assert!(!first.verified && first.repaired.is_none());
    let Repair::MarkThenSet(mark) = &marked else {
        panic!("marked");
    };
    assert_eq!(first.refused_mark, Some(mark.text()));
    let told = first.not_repaired.expect("told the first time");
    assert_eq!(told.reason, "LiveDriftNotRepaired");
    assert!(
        told.note.ends_with("ERR maxmemory out of range"),
        "{}",
        told.note
    );
    let again = after_set_back(refused, &Repair::Set, &hash(), true);
    assert_eq!(
        again,
        AfterSetBack::default(),
        "told once, and no mark to keep"
    );
    // A pod that did not answer, or a fence closed: nothing set, nothing remembered.
    let not_set = after_set_back(SetBack::NotSet, &marked, &hash(), false);
    assert_eq!(not_set, AfterSetBack::default());
}
