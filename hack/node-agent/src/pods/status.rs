//! The pod status to report, computed from what the pod's containers are doing (pure).

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// One container as its runtime sees it.
#[derive(Debug, Clone)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: ContainerState,
    pub last_state: Option<ContainerState>,
    pub ready: bool,
    pub started: bool,
    pub restart_count: i32,
    /// An init container with `restartPolicy: Always`: it counts as initialised once started.
    pub sidecar: bool,
}

/// The pod as the worker sees it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub pod_ip: Option<Ipv4Addr>,
    pub host_ip: Ipv4Addr,
    pub start_time: Timestamp,
    /// The network namespace exists and has its address.
    pub sandbox_ready: bool,
    pub init: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
}

pub fn is_terminal(phase: &str) -> bool {
    matches!(phase, "Succeeded" | "Failed")
}

fn init_done(c: &ContainerView) -> bool {
    if c.sidecar {
        c.started
    } else {
        c.state
            .terminated
            .as_ref()
            .is_some_and(|t| t.exit_code == 0)
    }
}

/// The kubelet's phase rules, for this agent's subset of states.
pub fn phase(restart_policy: &str, view: &PodView) -> &'static str {
    if !view.init.iter().all(init_done) {
        let init_failed = view.init.iter().any(|c| {
            !c.sidecar
                && c.state
                    .terminated
                    .as_ref()
                    .is_some_and(|t| t.exit_code != 0)
        });
        return if init_failed && restart_policy == "Never" {
            "Failed"
        } else {
            "Pending"
        };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &view.containers {
        if c.state.running.is_some() {
            running += 1;
        } else if let Some(t) = &c.state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if c
            .last_state
            .as_ref()
            .is_some_and(|s| s.terminated.is_some())
        {
            // Waiting to restart after having run.
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 || view.containers.is_empty() {
        "Pending"
    } else if running > 0 || restart_policy == "Always" {
        // All stopped under Always: they are being restarted.
        "Running"
    } else if stopped == succeeded {
        "Succeeded"
    } else if restart_policy == "Never" {
        "Failed"
    } else {
        "Running"
    }
}

/// Condition types this agent owns; others (readiness gates, DisruptionTarget) are kept.
const OWNED: [&str; 5] = [
    "PodScheduled",
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
];

pub fn build(pod: &Pod, view: &PodView, now: Timestamp) -> PodStatus {
    let spec = pod.spec.as_ref();
    let restart_policy = spec
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let phase = phase(restart_policy, view);
    let existing = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let generation = pod.metadata.generation;
    let condition = |type_: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        // The transition time only moves when the status does.
        let since = existing
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        PodCondition {
            type_: type_.into(),
            status: status.into(),
            reason: if ok { None } else { reason.map(Into::into) },
            message: if ok { None } else { message },
            last_transition_time: Some(since),
            observed_generation: generation,
            last_probe_time: None,
        }
    };

    let incomplete: Vec<&str> = view
        .init
        .iter()
        .filter(|c| !init_done(c))
        .map(|c| c.name.as_str())
        .collect();
    let unready: Vec<&str> = view
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let gates_unready: Vec<&str> = spec
        .and_then(|s| s.readiness_gates.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|g| g.condition_type.as_str())
        .filter(|t| !existing.iter().any(|c| c.type_ == *t && c.status == "True"))
        .collect();
    let terminal = is_terminal(phase);
    let containers_ready = !terminal && unready.is_empty() && incomplete.is_empty();
    let not_ready_reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let unready_message = Some(format!(
        "containers with unready status: [{}]",
        unready.join(" ")
    ));

    let mut conditions = vec![
        condition("PodReadyToStartContainers", view.sandbox_ready, None, None),
        condition(
            "Initialized",
            incomplete.is_empty(),
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
        ),
        condition(
            "Ready",
            containers_ready && gates_unready.is_empty(),
            Some(if containers_ready {
                "ReadinessGatesNotReady"
            } else {
                not_ready_reason
            }),
            if containers_ready {
                Some(format!(
                    "corresponding condition of pod readiness gate {:?} does not exist or is False",
                    gates_unready.join(", ")
                ))
            } else {
                unready_message.clone()
            },
        ),
        condition(
            "ContainersReady",
            containers_ready,
            Some(not_ready_reason),
            unready_message,
        ),
        condition("PodScheduled", true, None, None),
    ];
    conditions.extend(
        existing
            .iter()
            .filter(|c| !OWNED.contains(&c.type_.as_str()))
            .cloned(),
    );

    let statuses = |views: &[ContainerView]| {
        views
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone(),
                image_id: c.image_id.clone(),
                container_id: c.container_id.clone(),
                state: Some(c.state.clone()),
                last_state: Some(c.last_state.clone().unwrap_or_default()),
                ready: c.ready,
                started: Some(c.started),
                restart_count: c.restart_count,
                ..ContainerStatus::default()
            })
            .collect::<Vec<_>>()
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(view.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: view.host_ip.to_string(),
        }]),
        pod_ip: view.pod_ip.map(|ip| ip.to_string()),
        pod_ips: view.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: Some(Time(view.start_time)),
        init_container_statuses: (!view.init.is_empty()).then(|| statuses(&view.init)),
        container_statuses: Some(statuses(&view.containers)),
        observed_generation: generation,
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, PodSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn waiting(reason: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: None,
            }),
            ..ContainerState::default()
        }
    }

    fn running() -> ContainerState {
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(now())),
            }),
            ..ContainerState::default()
        }
    }

    fn terminated(exit_code: i32) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }
    }

    fn container(name: &str, state: ContainerState, ready: bool) -> ContainerView {
        ContainerView {
            name: name.into(),
            image: "redis:7".into(),
            image_id: "host://redis".into(),
            container_id: None,
            started: state.running.is_some(),
            state,
            last_state: None,
            ready,
            restart_count: 0,
            sidecar: false,
        }
    }

    fn view(containers: Vec<ContainerView>) -> PodView {
        PodView {
            pod_ip: Some(Ipv4Addr::new(10, 244, 0, 3)),
            host_ip: Ipv4Addr::new(10, 244, 255, 254),
            start_time: now(),
            sandbox_ready: true,
            init: vec![],
            containers,
        }
    }

    fn pod(restart_policy: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                restart_policy: Some(restart_policy.into()),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn condition<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
        let conditions = status.conditions.as_ref().unwrap();
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn phase_follows_the_kubelet_rules() {
        let v = view(vec![container("a", waiting("ContainerCreating"), false)]);
        assert_eq!(phase("Always", &v), "Pending");
        let v = view(vec![container("a", running(), false)]);
        assert_eq!(phase("Always", &v), "Running");
        let mut crashed = container("a", waiting("CrashLoopBackOff"), false);
        crashed.last_state = Some(terminated(1));
        assert_eq!(phase("Always", &view(vec![crashed])), "Running");
        let v = view(vec![container("a", terminated(0), false)]);
        assert_eq!(phase("Never", &v), "Succeeded");
        let v = view(vec![
            container("a", terminated(0), false),
            container("b", terminated(2), false),
        ]);
        assert_eq!(phase("Never", &v), "Failed");
        assert_eq!(phase("OnFailure", &v), "Running");
    }

    #[test]
    fn init_containers_gate_the_pod() {
        let mut v = view(vec![container("main", waiting("PodInitializing"), false)]);
        v.init = vec![container("setup", running(), false)];
        assert_eq!(phase("Always", &v), "Pending");
        v.init = vec![container("setup", terminated(1), false)];
        assert_eq!(phase("Never", &v), "Failed");
        assert_eq!(phase("Always", &v), "Pending");
        let status = build(&pod("Always"), &v, now());
        let initialized = condition(&status, "Initialized");
        assert_eq!(initialized.status, "False");
        assert_eq!(
            initialized.message.as_deref(),
            Some("containers with incomplete status: [setup]")
        );
        v.init = vec![container("setup", terminated(0), false)];
        assert_eq!(phase("Always", &v), "Pending");
        assert_eq!(
            condition(&build(&pod("Always"), &v, now()), "Initialized").status,
            "True"
        );
    }

    #[test]
    fn ready_only_when_every_container_is_ready() {
        let v = view(vec![
            container("a", running(), true),
            container("b", running(), false),
        ]);
        let status = build(&pod("Always"), &v, now());
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.244.0.3"));
        let ready = condition(&status, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [b]")
        );
        assert_eq!(condition(&status, "PodScheduled").status, "True");
        assert_eq!(condition(&status, "Initialized").status, "True");

        let v = view(vec![
            container("a", running(), true),
            container("b", running(), true),
        ]);
        let status = build(&pod("Always"), &v, now());
        assert_eq!(condition(&status, "Ready").status, "True");
        assert_eq!(condition(&status, "ContainersReady").status, "True");
        assert_eq!(status.observed_generation, Some(1));
    }

    #[test]
    fn transition_times_move_only_on_change_and_foreign_conditions_survive() {
        let earlier: Timestamp = "2025-06-01T00:00:00Z".parse().unwrap();
        let mut p = pod("Always");
        p.status = Some(PodStatus {
            conditions: Some(vec![
                PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(earlier)),
                    ..PodCondition::default()
                },
                PodCondition {
                    type_: "ContainersReady".into(),
                    status: "False".into(),
                    last_transition_time: Some(Time(earlier)),
                    ..PodCondition::default()
                },
                PodCondition {
                    type_: "example.com/gate".into(),
                    status: "True".into(),
                    ..PodCondition::default()
                },
            ]),
            ..PodStatus::default()
        });
        let status = build(&p, &view(vec![container("a", running(), true)]), now());
        assert_eq!(
            condition(&status, "Ready").last_transition_time,
            Some(Time(earlier))
        );
        assert_eq!(
            condition(&status, "ContainersReady").last_transition_time,
            Some(Time(now()))
        );
        assert_eq!(condition(&status, "example.com/gate").status, "True");
    }

    #[test]
    fn terminal_pods_are_not_ready() {
        let status = build(
            &pod("Never"),
            &view(vec![container("a", terminated(0), false)]),
            now(),
        );
        assert_eq!(status.phase.as_deref(), Some("Succeeded"));
        assert_eq!(
            condition(&status, "Ready").reason.as_deref(),
            Some("PodCompleted")
        );
    }
}
