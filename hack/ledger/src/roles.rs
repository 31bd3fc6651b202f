//! The role poller: asks every pod `ROLE` at a fixed interval and counts promotions, demotions
//! and how many pods claimed the primary role in the same round.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use redis::Value;
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::conn;
use crate::control::Control;
use crate::gaps::Mark;
use crate::target::run_for_lines;

/// What a pod answered to `ROLE`, or `Down` when it did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Replica,
    Down,
}

/// A pod's role changed between two rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub at_ms: f64,
    pub from: Role,
    pub to: Role,
}

/// One pod's history.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PodRoles {
    pub transitions: Vec<Transition>,
    #[serde(skip)]
    last_seen: Option<Role>,
    #[serde(skip)]
    last_answer: Option<Role>,
}

/// Counts between the marks `<name> start` and `<name> end`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoleEvent {
    pub name: String,
    pub start_ms: f64,
    pub end_ms: Option<f64>,
    /// Pods that went from replica to primary (a pod that was down in between included).
    pub promotions: u32,
    pub demotions: u32,
    pub max_primaries: usize,
}

/// The JSON the `roles` command prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolesReport {
    pub started_unix_ms: u128,
    pub ran_ms: f64,
    pub interval_ms: f64,
    pub rounds: u64,
    /// The most pods that answered `master` in one round (rounds are samples: two primaries
    /// for less than an interval can be missed).
    pub max_primaries_at_once: usize,
    pub rounds_with_several_primaries: u64,
    pub rounds_without_primary: u64,
    pub promotions: u32,
    pub demotions: u32,
    pub pods: BTreeMap<String, PodRoles>,
    pub marks: Vec<Mark>,
    pub events: Vec<RoleEvent>,
}

/// Pure bookkeeping of rounds, in ms since the start.
#[derive(Debug)]
pub struct RoleTracker {
    report: RolesReport,
}

impl RoleTracker {
    pub fn new(interval_ms: f64, started_unix_ms: u128) -> Self {
        Self {
            report: RolesReport {
                started_unix_ms,
                ran_ms: 0.0,
                interval_ms,
                rounds: 0,
                max_primaries_at_once: 0,
                rounds_with_several_primaries: 0,
                rounds_without_primary: 0,
                promotions: 0,
                demotions: 0,
                pods: BTreeMap::new(),
                marks: Vec::new(),
                events: Vec::new(),
            },
        }
    }

    /// One round's answers, pod name -> role.
    pub fn observe(&mut self, now_ms: f64, answers: &[(String, Role)]) {
        let report = &mut self.report;
        report.rounds += 1;
        let primaries = answers.iter().filter(|(_, r)| *r == Role::Primary).count();
        report.max_primaries_at_once = report.max_primaries_at_once.max(primaries);
        match primaries {
            0 => report.rounds_without_primary += 1,
            1 => {}
            _ => report.rounds_with_several_primaries += 1,
        }
        let open: Vec<usize> = (0..report.events.len())
            .filter(|&i| report.events[i].end_ms.is_none())
            .collect();
        for &i in &open {
            let event = &mut report.events[i];
            event.max_primaries = event.max_primaries.max(primaries);
        }
        for (name, role) in answers {
            let pod = report.pods.entry(name.clone()).or_default();
            if let Some(before) = pod.last_seen
                && before != *role
            {
                pod.transitions.push(Transition {
                    at_ms: now_ms,
                    from: before,
                    to: *role,
                });
            }
            pod.last_seen = Some(*role);
            if *role == Role::Down {
                continue;
            }
            let (promoted, demoted) = match (pod.last_answer, *role) {
                (Some(Role::Replica), Role::Primary) => (1, 0),
                (Some(Role::Primary), Role::Replica) => (0, 1),
                _ => (0, 0),
            };
            pod.last_answer = Some(*role);
            report.promotions += promoted;
            report.demotions += demoted;
            for &i in &open {
                report.events[i].promotions += promoted;
                report.events[i].demotions += demoted;
            }
        }
    }

    /// Records a mark; `<name> start`/`<name> end` frame an event as in the writer.
    pub fn mark(&mut self, now_ms: f64, text: &str) {
        let report = &mut self.report;
        report.marks.push(Mark {
            at_ms: now_ms,
            text: text.to_owned(),
        });
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            [name, "start"] => report.events.push(RoleEvent {
                name: (*name).to_owned(),
                start_ms: now_ms,
                end_ms: None,
                promotions: 0,
                demotions: 0,
                max_primaries: 0,
            }),
            [name, "end"] => {
                if let Some(event) = report
                    .events
                    .iter_mut()
                    .rev()
                    .find(|e| e.name == *name && e.end_ms.is_none())
                {
                    event.end_ms = Some(now_ms);
                }
            }
            _ => {}
        }
    }

    pub fn finish(mut self, now_ms: f64) -> RolesReport {
        self.report.ran_ms = now_ms;
        self.report
    }
}

/// How to poll.
pub struct RolesOptions {
    /// Prints one pod a line: `<name> <host:port>`, or just `<host:port>`.
    pub targets_cmd: String,
    pub interval: Duration,
    /// How often the pod list is asked for again (also after any pod failed to answer).
    pub refresh: Duration,
    pub duration: Duration,
}

/// Parses the targets command's lines into (name, address).
pub fn parse_targets(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [addr] => Some(((*addr).to_owned(), (*addr).to_owned())),
                [name, addr] => Some(((*name).to_owned(), (*addr).to_owned())),
                _ => None,
            }
        })
        .collect()
}

/// The role in a `ROLE` reply.
fn parse_role(reply: &Value) -> Role {
    let Value::Array(items) = reply else {
        return Role::Down;
    };
    match items.first() {
        Some(Value::BulkString(word)) if word == b"master" => Role::Primary,
        Some(Value::BulkString(word)) if word == b"slave" => Role::Replica,
        _ => Role::Down,
    }
}

/// An open connection and the address it goes to.
type Open = (String, MultiplexedConnection);

async fn ask(addr: String, open: Option<Open>, timeout: Duration) -> (Role, Option<Open>) {
    let mut connection = match open {
        Some((was, connection)) if was == addr => connection,
        _ => match conn::connect(&addr, timeout).await {
            Ok(connection) => connection,
            Err(_) => return (Role::Down, None),
        },
    };
    match conn::query::<Value>(&mut connection, &redis::cmd("ROLE"), timeout).await {
        Ok(reply) => (parse_role(&reply), Some((addr, connection))),
        Err(_) => (Role::Down, None),
    }
}

/// Polls until the duration is over or a `stop` arrives.
pub async fn run(
    options: RolesOptions,
    mut controls: mpsc::UnboundedReceiver<Control>,
) -> RolesReport {
    let start = Instant::now();
    let now_ms = || start.elapsed().as_secs_f64() * 1000.0;
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut tracker = RoleTracker::new(options.interval.as_secs_f64() * 1000.0, started_unix_ms);
    let mut targets: Vec<(String, String)> = Vec::new();
    let mut refreshed: Option<Instant> = None;
    let mut any_down = false;
    let mut connections: HashMap<String, Open> = HashMap::new();
    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = tokio::time::sleep(options.duration);
    tokio::pin!(deadline);
    let mut controls_open = true;
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            control = controls.recv(), if controls_open => {
                match control {
                    Some(Control::Mark(text)) => tracker.mark(now_ms(), &text),
                    Some(Control::Stop) => break,
                    None => controls_open = false,
                }
                continue;
            }
            _ = ticker.tick() => {}
        }
        let due = refreshed.is_none_or(|at| {
            at.elapsed() >= options.refresh || (any_down && at.elapsed() >= options.interval * 2)
        });
        if due {
            if let Ok(lines) = run_for_lines(&options.targets_cmd).await {
                targets = parse_targets(&lines);
            }
            refreshed = Some(Instant::now());
        }
        let asks = targets
            .iter()
            .map(|(name, addr)| ask(addr.clone(), connections.remove(name), options.interval));
        let answers = join_all(asks).await;
        let mut round = Vec::with_capacity(targets.len());
        any_down = false;
        for ((name, _), (role, open)) in targets.iter().zip(answers) {
            any_down |= role == Role::Down;
            if let Some(open) = open {
                connections.insert(name.clone(), open);
            }
            round.push((name.clone(), role));
        }
        tracker.observe(now_ms(), &round);
    }
    tracker.finish(now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(roles: &[(&str, Role)]) -> Vec<(String, Role)> {
        roles.iter().map(|(n, r)| ((*n).to_owned(), *r)).collect()
    }

    #[test]
    fn a_switchover_is_one_promotion_and_one_demotion() {
        use Role::*;
        let mut tracker = RoleTracker::new(100.0, 0);
        tracker.observe(
            0.0,
            &round(&[("p0", Primary), ("p1", Replica), ("p2", Replica)]),
        );
        tracker.mark(50.0, "rollout-1 start");
        // p2 restarts (down, back as replica), then p0 hands over to p1 and restarts.
        tracker.observe(
            100.0,
            &round(&[("p0", Primary), ("p1", Replica), ("p2", Down)]),
        );
        tracker.observe(
            200.0,
            &round(&[("p0", Primary), ("p1", Replica), ("p2", Replica)]),
        );
        tracker.observe(
            300.0,
            &round(&[("p0", Replica), ("p1", Primary), ("p2", Replica)]),
        );
        tracker.observe(
            400.0,
            &round(&[("p0", Down), ("p1", Primary), ("p2", Replica)]),
        );
        tracker.observe(
            500.0,
            &round(&[("p0", Replica), ("p1", Primary), ("p2", Replica)]),
        );
        tracker.mark(550.0, "rollout-1 end");
        tracker.observe(
            600.0,
            &round(&[("p0", Replica), ("p1", Primary), ("p2", Replica)]),
        );
        let report = tracker.finish(650.0);
        assert_eq!((report.promotions, report.demotions), (1, 1));
        assert_eq!(report.max_primaries_at_once, 1);
        let event = &report.events[0];
        assert_eq!(
            (event.promotions, event.demotions, event.max_primaries),
            (1, 1, 1)
        );
        assert_eq!(report.pods["p0"].transitions.len(), 3);
        assert_eq!(report.rounds, 7);
    }

    #[test]
    fn a_restarted_primary_that_comes_back_primary_is_no_role_change_but_two_primaries_count() {
        use Role::*;
        let mut tracker = RoleTracker::new(100.0, 0);
        tracker.observe(0.0, &round(&[("p0", Primary), ("p1", Primary)]));
        tracker.observe(100.0, &round(&[("p0", Down), ("p1", Primary)]));
        tracker.observe(200.0, &round(&[("p0", Primary), ("p1", Primary)]));
        let report = tracker.finish(300.0);
        assert_eq!((report.promotions, report.demotions), (0, 0));
        assert_eq!(report.max_primaries_at_once, 2);
        assert_eq!(report.rounds_with_several_primaries, 2);
    }

    #[test]
    fn targets_are_named_or_named_by_their_address() {
        let lines = vec![
            "redis-0 10.1.0.5:6379".to_owned(),
            "10.1.0.6:6379".to_owned(),
            "too many words here".to_owned(),
        ];
        assert_eq!(
            parse_targets(&lines),
            [
                ("redis-0".to_owned(), "10.1.0.5:6379".to_owned()),
                ("10.1.0.6:6379".to_owned(), "10.1.0.6:6379".to_owned())
            ]
        );
    }

    #[test]
    fn role_replies_map_to_roles() {
        let reply = |word: &[u8]| Value::Array(vec![Value::BulkString(word.to_vec())]);
        assert_eq!(parse_role(&reply(b"master")), Role::Primary);
        assert_eq!(parse_role(&reply(b"slave")), Role::Replica);
        assert_eq!(parse_role(&Value::Nil), Role::Down);
    }
}
