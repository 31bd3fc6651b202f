//! The binary's command line as a person meets it: help texts and the CRD subcommand.

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_redis-operator"))
        .args(args)
        .output()
        .expect("run redis-operator");
    assert!(
        out.status.success(),
        "redis-operator {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_names_each_subcommand() {
    let help = run(&["--help"]);
    for word in ["run", "crd", "RedisInstance"] {
        assert!(help.contains(word), "--help lacks {word:?}:\n{help}");
    }
}

#[test]
fn run_help_explains_every_flag() {
    let help = run(&["run", "--help"]);
    for flag in [
        "--namespace",
        "--metrics-addr",
        "--debug-addr",
        "--kubeconfig",
        "--log-format",
        "--progress-deadline",
        "--api-qps",
        "--api-burst",
        "--api-concurrency",
        "--max-concurrent-steps",
        "--max-concurrent-pod-checks",
        "--settle-seconds",
        "--hibernate-after-seconds",
        "--leader-elect",
    ] {
        assert!(help.contains(flag), "run --help lacks {flag}:\n{help}");
    }
    assert!(
        help.contains("0.0.0.0:8080"),
        "the default metrics address is shown"
    );
    assert!(
        help.contains("127.0.0.1:8081"),
        "the default debug address, on loopback, is shown"
    );
}

#[test]
fn crd_subcommand_prints_the_committed_manifest() {
    let printed = run(&["crd"]);
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/base/crd.yaml"))
            .unwrap();
    assert_eq!(
        printed, committed,
        "deploy/base/crd.yaml is stale: run `make crd`"
    );
}

#[test]
fn unknown_subcommand_fails_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_redis-operator"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
}
