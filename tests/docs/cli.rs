//! The binary's own account of its command line: subcommands and flags from `--help`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// What `redis-operator <args> --help` prints.
pub fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_redis-operator"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run redis-operator");
    assert!(
        out.status.success(),
        "redis-operator {args:?} --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subcommands `redis-operator --help` lists.
pub fn subcommands(top: &str) -> BTreeSet<String> {
    top.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Whether `help` lists `flag` (`--name` or `-x`) as an option.
pub fn accepts(help: &str, flag: &str) -> bool {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=' || c == '<')
        .any(|word| word == flag)
}

/// `--flag` from a shown word: `--leader-elect[=false]` and `--log-format=text` name the flag
/// before `[` or `=`.
pub fn flag_name(word: &str) -> Option<&str> {
    let name = word.split(['[', '=']).next().unwrap_or(word);
    (name.starts_with('-') && name.len() > 1 && name != "--").then_some(name)
}

/// Flags checked against the `--help` of their subcommand (each help text read once).
#[derive(Default)]
pub struct FlagCheck {
    helps: BTreeMap<String, String>,
    /// How many flags were checked.
    pub checked: usize,
    /// What was not accepted, with where the docs show it.
    pub problems: Vec<String>,
}

impl FlagCheck {
    pub fn check(&mut self, place: &str, sub: &str, flag: &str) {
        let text = self.helps.entry(sub.to_owned()).or_insert_with(|| {
            if sub.is_empty() {
                help(&[])
            } else {
                help(&[sub])
            }
        });
        self.checked += 1;
        if !accepts(text, flag) {
            self.problems.push(format!(
                "{place}: `redis-operator {sub} {flag}`: not in `redis-operator {sub} --help`"
            ));
        }
    }
}
