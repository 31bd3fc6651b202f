//! Probe configuration (with the Kubernetes defaults) and the success/failure threshold logic.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Why a probe definition cannot be used; the container does not start with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The probe sets no handler, or more than one.
    #[error("failed to parse {0} probe: exactly one of exec, tcpSocket, httpGet must be set")]
    Handler(Kind),
    /// gRPC or HTTPS probes, which this agent does not implement.
    #[error("failed to parse {0} probe: {1} probes are not supported by the local node agent")]
    Unsupported(Kind, &'static str),
    /// A named port the container does not declare, or a number out of range.
    #[error("failed to parse {0} probe: port {1:?} is not a port of the container")]
    Port(Kind, String),
    /// A threshold or period below its minimum.
    #[error("failed to parse {0} probe: {1} must be at least {2}")]
    Range(Kind, &'static str, i32),
}

/// Which of the three probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Readiness,
    Liveness,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Startup => "startup",
            Kind::Readiness => "readiness",
            Kind::Liveness => "liveness",
        })
    }
}

/// How to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run a command in the container's namespaces; exit code 0 passes.
    Exec(Vec<String>),
    /// Open a TCP connection; `host` defaults to the pod IP.
    Tcp { host: Option<String>, port: u16 },
    /// Plain-HTTP GET; a 2xx or 3xx status passes.
    Http {
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
}

/// A probe with its defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: Kind,
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeSpec {
    pub fn parse(kind: Kind, probe: &Probe, ports: &[ContainerPort]) -> Result<Self, Error> {
        let port = |port: &IntOrString| resolve_port(kind, port, ports);
        let mut actions = Vec::new();
        if let Some(exec) = &probe.exec {
            actions.push(Action::Exec(exec.command.clone().unwrap_or_default()));
        }
        if let Some(tcp) = &probe.tcp_socket {
            actions.push(Action::Tcp {
                host: tcp.host.clone(),
                port: port(&tcp.port)?,
            });
        }
        if let Some(http) = &probe.http_get {
            if http
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("https"))
            {
                return Err(Error::Unsupported(kind, "HTTPS"));
            }
            actions.push(Action::Http {
                host: http.host.clone(),
                port: port(&http.port)?,
                path: http.path.clone().unwrap_or_else(|| "/".into()),
                headers: http
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            });
        }
        if probe.grpc.is_some() {
            return Err(Error::Unsupported(kind, "gRPC"));
        }
        let action = match <[Action; 1]>::try_from(actions) {
            Ok([action]) => action,
            Err(_) => return Err(Error::Handler(kind)),
        };
        let at_least = |value: Option<i32>, default: i32, min: i32, name: &'static str| {
            let value = value.unwrap_or(default);
            if value < min {
                Err(Error::Range(kind, name, min))
            } else {
                Ok(value as u32)
            }
        };
        Ok(Self {
            kind,
            action,
            initial_delay: secs(at_least(
                probe.initial_delay_seconds,
                0,
                0,
                "initialDelaySeconds",
            )?),
            period: secs(at_least(probe.period_seconds, 10, 1, "periodSeconds")?),
            timeout: secs(at_least(probe.timeout_seconds, 1, 1, "timeoutSeconds")?),
            success_threshold: at_least(probe.success_threshold, 1, 1, "successThreshold")?,
            failure_threshold: at_least(probe.failure_threshold, 3, 1, "failureThreshold")?,
        })
    }
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

fn resolve_port(kind: Kind, port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, Error> {
    let number = match port {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .or_else(|| name.parse().ok()),
    };
    number
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            Error::Port(
                kind,
                match port {
                    IntOrString::Int(n) => n.to_string(),
                    IntOrString::String(s) => s.clone(),
                },
            )
        })
}

/// Consecutive-result counting: the verdict flips only after `successThreshold` passes in a
/// row or `failureThreshold` failures in a row.
#[derive(Debug, Clone)]
pub struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    passing: bool,
}

impl Tracker {
    /// `passing` is the verdict before the first result: false for readiness and startup,
    /// true for liveness (a container is presumed alive).
    pub fn new(spec: &ProbeSpec, passing: bool) -> Self {
        Self {
            success_threshold: spec.success_threshold,
            failure_threshold: spec.failure_threshold,
            successes: 0,
            failures: 0,
            passing,
        }
    }

    /// Records one result and returns the verdict.
    pub fn record(&mut self, ok: bool) -> bool {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= self.success_threshold {
                self.passing = true;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.failure_threshold {
                self.passing = false;
            }
        }
        self.passing
    }

    /// `failureThreshold` consecutive failures: a startup or liveness probe gives up.
    pub fn exhausted(&self) -> bool {
        self.failures >= self.failure_threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, TCPSocketAction};

    fn ports() -> Vec<ContainerPort> {
        vec![ContainerPort {
            name: Some("redis".into()),
            container_port: 6379,
            ..ContainerPort::default()
        }]
    }

    #[test]
    fn applies_kubernetes_defaults() {
        let probe = Probe {
            tcp_socket: Some(TCPSocketAction {
                host: None,
                port: IntOrString::String("redis".into()),
            }),
            ..Probe::default()
        };
        let spec = ProbeSpec::parse(Kind::Readiness, &probe, &ports()).unwrap();
        assert_eq!(
            spec.action,
            Action::Tcp {
                host: None,
                port: 6379
            }
        );
        assert_eq!(spec.initial_delay, Duration::ZERO);
        assert_eq!(spec.period, Duration::from_secs(10));
        assert_eq!(spec.timeout, Duration::from_secs(1));
        assert_eq!((spec.success_threshold, spec.failure_threshold), (1, 3));
    }

    #[test]
    fn honours_explicit_timing() {
        let probe = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["redis-cli".into(), "ping".into()]),
            }),
            initial_delay_seconds: Some(1),
            period_seconds: Some(2),
            timeout_seconds: Some(3),
            success_threshold: Some(2),
            failure_threshold: Some(5),
            ..Probe::default()
        };
        let spec = ProbeSpec::parse(Kind::Liveness, &probe, &[]).unwrap();
        assert_eq!(
            spec.action,
            Action::Exec(vec!["redis-cli".into(), "ping".into()])
        );
        assert_eq!(
            (spec.initial_delay, spec.period, spec.timeout),
            (
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(3)
            )
        );
        assert_eq!((spec.success_threshold, spec.failure_threshold), (2, 5));
    }

    #[test]
    fn rejects_unusable_probes() {
        assert_eq!(
            ProbeSpec::parse(Kind::Readiness, &Probe::default(), &[]),
            Err(Error::Handler(Kind::Readiness))
        );
        let unknown_port = Probe {
            tcp_socket: Some(TCPSocketAction {
                host: None,
                port: IntOrString::String("metrics".into()),
            }),
            ..Probe::default()
        };
        assert_eq!(
            ProbeSpec::parse(Kind::Liveness, &unknown_port, &ports()),
            Err(Error::Port(Kind::Liveness, "metrics".into()))
        );
        let https = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(443),
                scheme: Some("HTTPS".into()),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        };
        assert_eq!(
            ProbeSpec::parse(Kind::Startup, &https, &[]),
            Err(Error::Unsupported(Kind::Startup, "HTTPS"))
        );
        let zero_period = Probe {
            tcp_socket: Some(TCPSocketAction {
                host: None,
                port: IntOrString::Int(6379),
            }),
            period_seconds: Some(0),
            ..Probe::default()
        };
        assert_eq!(
            ProbeSpec::parse(Kind::Readiness, &zero_period, &[]),
            Err(Error::Range(Kind::Readiness, "periodSeconds", 1))
        );
    }

    #[test]
    fn tracker_flips_only_after_consecutive_thresholds() {
        let probe = Probe {
            exec: Some(ExecAction { command: None }),
            success_threshold: Some(2),
            failure_threshold: Some(2),
            ..Probe::default()
        };
        let spec = ProbeSpec::parse(Kind::Readiness, &probe, &[]).unwrap();
        let mut tracker = Tracker::new(&spec, false);
        assert!(!tracker.record(true));
        assert!(tracker.record(true));
        assert!(tracker.record(false), "one failure is below the threshold");
        assert!(tracker.record(true));
        assert!(tracker.record(false));
        assert!(!tracker.exhausted());
        assert!(!tracker.record(false));
        assert!(tracker.exhausted());
    }
}
