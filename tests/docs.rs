//! The docs check: README.md and docs/*.md link only to files and anchors that exist, name
//! only real `make` targets and real `redis-operator` subcommands and flags, and
//! docs/troubleshooting.md explains every Event and condition reason the sources emit.

#[path = "docs/cli.rs"]
mod cli;
#[path = "docs/links.rs"]
mod links;
#[path = "docs/markdown.rs"]
mod markdown;
#[path = "docs/reasons.rs"]
mod reasons;
#[path = "docs/rust_source.rs"]
mod rust_source;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cli::{FlagCheck, accepts, flag_name, help, subcommands};
use markdown::{Doc, anchors, code_spans, commands, parse};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every docs/*.md, as (path relative to the repository, text).
fn documents() -> Vec<(PathBuf, String)> {
    let root = repo();
    let mut paths = vec![PathBuf::from("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            p.strip_prefix(&root)
                .expect("under the repository")
                .to_owned()
        })
        .collect();
    pages.sort();
    paths.extend(pages);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(root.join(&p)).expect("read a document");
            (p, text)
        })
        .collect()
}

/// Whether a fence's info string says its lines are shell commands (others show output, with
/// commands as `$ ` lines).
fn is_shell(info: &str) -> bool {
    matches!(info, "sh" | "bash" | "shell")
}

/// Every command line a document shows: lines of `sh` blocks, `$ ` lines of other blocks,
/// and code spans, with where they are.
fn shown_commands(path: &Path, doc: &Doc) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    for fence in &doc.fences {
        let shell = is_shell(&fence.info);
        for (offset, line) in fence.lines.iter().enumerate() {
            if !shell && !line.trim_start().starts_with("$ ") {
                continue;
            }
            let place = format!("{}:{}", path.display(), fence.line + 1 + offset);
            found.extend(commands(line).into_iter().map(|c| (place.clone(), c)));
        }
    }
    for (number, line) in &doc.prose {
        let place = format!("{}:{number}", path.display());
        for span in code_spans(line).0 {
            found.extend(commands(&span).into_iter().map(|c| (place.clone(), c)));
        }
    }
    found
}

fn parsed_documents() -> BTreeMap<PathBuf, Doc> {
    documents()
        .into_iter()
        .map(|(path, text)| (path, parse(&text)))
        .collect()
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let docs = parsed_documents();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (path, doc) in &docs {
        for (number, line) in &doc.prose {
            let (_, outside_code) = code_spans(line);
            for target in markdown::links(&outside_code) {
                checked += 1;
                if let Some(problem) = links::broken(path, &target, &docs) {
                    problems.push(format!("{}:{number}: {problem}", path.display()));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: is the link parser broken?"
    );
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

/// Other files that point readers at the docs (comments, help texts) name real anchors too.
#[test]
fn references_to_the_docs_from_code_and_manifests_resolve() {
    let docs = parsed_documents();
    let root = repo();
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for dir in [
        "src",
        "hack",
        "deploy",
        "tests",
        "dashboards",
        "examples",
        ".ci",
    ] {
        links::walk(&root.join(dir), &mut files);
    }
    files.extend(["Makefile", "Dockerfile"].map(|f| root.join(f)));
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let rel = file
            .strip_prefix(&root)
            .expect("under the repository")
            .to_owned();
        // The check's own sources hold examples, not references.
        if rel.to_string_lossy().starts_with("tests/docs") {
            continue;
        }
        for (index, line) in text.lines().enumerate() {
            for reference in links::doc_references(line) {
                if let Some(problem) = links::broken(Path::new("README.md"), &reference, &docs) {
                    problems.push(format!("{}:{}: {problem}", rel.display(), index + 1));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken references to the docs:\n{}",
        problems.join("\n")
    );
}

#[test]
fn doc_references_are_found_in_comments() {
    assert_eq!(
        links::doc_references("# See the RBAC table (docs/operations.md#rbac)."),
        ["docs/operations.md#rbac"]
    );
    assert_eq!(
        links::doc_references("see docs/reference.md, and README.md#x"),
        ["docs/reference.md", "README.md#x"]
    );
    assert!(links::doc_references("see the README").is_empty());
}

fn makefile_targets() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("Makefile")).expect("read the Makefile");
    text.lines()
        .filter_map(|l| l.split_once(':').map(|(t, _)| t))
        .filter(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_repository_path_the_docs_mention_exists() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for (path, text) in documents() {
        for (place, words) in shown_commands(&path, &parse(&text)) {
            // kubectl's `deploy/NAME` names a Deployment: only its files (-f, -k) are paths.
            let files: Vec<&String> = match words[0].as_str() {
                "kubectl" => words
                    .windows(2)
                    .filter(|w| matches!(w[0].as_str(), "-f" | "-k" | "--filename"))
                    .map(|w| &w[1])
                    .collect(),
                _ => words.iter().collect(),
            };
            for mentioned in files.into_iter().filter_map(|w| links::mentioned_path(w)) {
                checked += 1;
                if let Some(problem) = links::missing(mentioned) {
                    problems.push(format!("{place}: {problem}"));
                }
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} paths found: is the extraction broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_make_target_the_docs_name_exists() {
    let targets = makefile_targets();
    assert!(
        targets.contains("test") && targets.contains("demo"),
        "Makefile parsed as {targets:?}"
    );
    let mut named = 0;
    let mut problems = Vec::new();
    for (path, text) in documents() {
        for (place, words) in shown_commands(&path, &parse(&text)) {
            if words[0] != "make" {
                continue;
            }
            let Some(target) = words[1..]
                .iter()
                .find(|w| !w.contains('=') && !w.starts_with('-'))
            else {
                continue;
            };
            named += 1;
            if !targets.contains(target) {
                problems.push(format!(
                    "{place}: `make {target}`: no such target (Makefile has {targets:?})"
                ));
            }
        }
    }
    assert!(
        named >= 5,
        "only {named} `make` commands found: is the extraction broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_subcommand_and_flag_the_docs_show_is_accepted() {
    let top = help(&[]);
    let subs = subcommands(&top);
    assert!(
        subs.contains("run") && subs.contains("diff"),
        "subcommands parsed as {subs:?} from:\n{top}"
    );
    let mut flags = FlagCheck::default();
    for (path, text) in documents() {
        let doc = parse(&text);
        for (place, words) in shown_commands(&path, &doc) {
            if words[0] != "redis-operator" {
                continue;
            }
            let sub = words
                .get(1)
                .filter(|w| !w.starts_with('-'))
                .map_or("", String::as_str);
            if !sub.is_empty() && !subs.contains(sub) {
                flags.problems.push(format!(
                    "{place}: `redis-operator {sub}`: no such subcommand ({subs:?})"
                ));
                continue;
            }
            for flag in words.iter().skip(1).filter_map(|w| flag_name(w)) {
                flags.check(&place, sub, flag);
            }
        }
        // Under a heading that names `redis-operator <sub>`, every `--flag` span is one of its.
        let mut section_sub: Option<String> = None;
        for (number, line) in &doc.prose {
            if line.starts_with('#') {
                section_sub = code_spans(line)
                    .0
                    .iter()
                    .find_map(|s| s.strip_prefix("redis-operator ").map(str::to_owned))
                    .filter(|s| subs.contains(s.as_str()));
                continue;
            }
            let Some(sub) = &section_sub else { continue };
            for span in code_spans(line).0 {
                if let Some(flag) = span.split_whitespace().next().and_then(flag_name) {
                    flags.check(&format!("{}:{number}", path.display()), sub, flag);
                }
            }
        }
    }
    assert!(
        flags.checked >= 20,
        "only {} flags checked: is the extraction broken?",
        flags.checked
    );
    assert!(flags.problems.is_empty(), "{}", flags.problems.join("\n"));
}

#[test]
fn flag_names_are_read_as_the_docs_write_them() {
    assert_eq!(flag_name("--leader-elect[=false]"), Some("--leader-elect"));
    assert_eq!(flag_name("--log-format=text"), Some("--log-format"));
    assert_eq!(flag_name("-f"), Some("-f"));
    assert_eq!(flag_name("default/redis-example"), None);
    assert!(accepts("  -f, --follow  Keep printing", "-f"));
    assert!(accepts(
        "      --leader-elect [<LEADER_ELECT>]",
        "--leader-elect"
    ));
    assert!(!accepts("      --leader-elect-now", "--leader-elect"));
}

/// A fence marked `<!-- run by tests/a.rs, tests/b.rs -->` shows commands those tests run:
/// each command's subcommand and flags appear as string literals in one of them, so neither can
/// change without the other.
#[test]
fn marked_blocks_match_the_tests_that_run_them() {
    let mut marked = 0;
    let mut problems = Vec::new();
    for (path, text) in documents() {
        for fence in parse(&text).fences {
            let Some(files) = fence
                .note
                .as_deref()
                .and_then(|n| n.strip_prefix("run by "))
            else {
                continue;
            };
            marked += 1;
            let tests: Vec<String> = files
                .split(',')
                .map(|f| {
                    std::fs::read_to_string(repo().join(f.trim()))
                        .unwrap_or_else(|e| panic!("{}:{}: {f}: {e}", path.display(), fence.line))
                })
                .collect();
            let shell = is_shell(&fence.info);
            for (offset, line) in fence.lines.iter().enumerate() {
                if !shell && !line.trim_start().starts_with("$ ") {
                    continue;
                }
                for words in commands(line) {
                    let place = format!("{}:{}", path.display(), fence.line + 1 + offset);
                    let sub = words.get(1).filter(|w| !w.starts_with('-'));
                    let flags = words.iter().skip(1).filter_map(|w| flag_name(w));
                    for word in sub.map(String::as_str).into_iter().chain(flags) {
                        let literal = format!("\"{word}\"");
                        if !tests.iter().any(|t| t.contains(&literal)) {
                            problems.push(format!("{place}: {literal} is in no test of `{files}`"));
                        }
                    }
                }
            }
        }
    }
    assert!(marked >= 3, "only {marked} marked blocks found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn source_reasons() -> reasons::Found {
    let sources = rust_source::load_tree(&repo(), "src");
    reasons::emitted(&sources).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_reason_scanner_finds_the_known_reasons_through_each_path() {
    let found = source_reasons();
    let kind_of = |reason: &str| -> BTreeSet<reasons::Kind> {
        found
            .get(reason)
            .unwrap_or_else(|| panic!("{reason} not found; found {:?}", found.keys()))
            .iter()
            .map(|(k, _)| *k)
            .collect()
    };
    use reasons::Kind::{Condition, Event};
    // A literal passed to `api.event(...)`, forwarded to `Event { reason }` as a parameter.
    assert!(kind_of("RestartStarted").contains(&Event));
    // Through `report_refusal`'s parameter, and as a literal condition reason.
    assert_eq!(kind_of("InvalidConfig"), BTreeSet::from([Event, Condition]));
    // `error.reason()`: the arms of a method.
    assert!(kind_of("ApplyFailed").contains(&Event));
    assert!(kind_of("RedisUnreachable").contains(&Event));
    // `let reason = match outcome { ... }`.
    assert!(kind_of("RolloutRolledBack").contains(&Event));
    // The `Rejection` struct's field: a constant array and a literal.
    assert!(kind_of("NeverReady").contains(&Condition));
    assert!(kind_of("RedisRejectedConfig").contains(&Condition));
    // kube's `Event { reason: "Standby".into() }` on the Lease.
    assert!(kind_of("Standby").contains(&Event));
    assert!(kind_of("AllReplicasReady").contains(&Condition));
    // Strings that are not reasons stay out: log messages, metric names, test code.
    for not_a_reason in ["restart overdue", "R", "Commented"] {
        assert!(
            !found.contains_key(not_a_reason),
            "{not_a_reason:?} taken for a reason"
        );
    }
    assert!(
        found.len() >= 30,
        "only {} reasons found: {:?}",
        found.len(),
        found.keys()
    );
}

#[test]
fn the_reason_scanner_follows_a_reason_and_refuses_what_it_cannot_follow() {
    use rust_source::Source;
    let code = r#"
        // A comment is no code: api.publish(&i, true, "Commented", n)
        fn publish(&self, instance: &I, warning: bool, reason: &str, note: String) {
            let event = Event { type_: t, reason: reason.to_owned(), note: Some(note) };
        }
        const KINDS: [&str; 2] = ["FromConst", "AlsoFromConst"];
        fn tell(api: &Api, outcome: Outcome) {
            let why = match outcome { Outcome::A => "FromMatch", Outcome::B => "FromOtherArm" };
            api.publish(&i, true, why, note);
            api.publish(&i, false, "Literal", format!("{x}"));
            api.publish(&i, false, KINDS[1], note);
        }
        #[cfg(test)]
        mod tests {
            fn t() { api.publish(&i, false, "OnlyInTests", n); }
        }
    "#;
    let found = reasons::emitted(&[Source::new("src/x.rs", code)]).expect("all followed");
    let names: BTreeSet<&str> = found.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "AlsoFromConst",
            "FromConst",
            "FromMatch",
            "FromOtherArm",
            "Literal"
        ])
    );

    let unknown = r#"
        fn publish(&self, reason: &str) { let e = Event { reason: reason.into() }; }
        fn tell(api: &Api, thing: &Thing) { api.publish(thing.kind); }
    "#;
    let error = reasons::emitted(&[Source::new("src/y.rs", unknown)]).expect_err("cannot follow");
    assert!(error.contains("thing.kind"), "{error}");
}

/// The reasons docs/troubleshooting.md explains: a code span in a table row.
fn troubleshooting_reasons() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("docs/troubleshooting.md"))
        .expect("read docs/troubleshooting.md");
    parse(&text)
        .prose
        .iter()
        .filter(|(_, l)| l.trim_start().starts_with('|'))
        .flat_map(|(_, l)| code_spans(l).0)
        .collect()
}

#[test]
fn troubleshooting_explains_every_reason_the_operator_emits() {
    let documented = troubleshooting_reasons();
    let mut missing = Vec::new();
    for (reason, places) in source_reasons() {
        if !documented.contains(&reason) {
            let places: Vec<String> = places
                .iter()
                .map(|(k, p)| format!("{k:?} at {p}"))
                .collect();
            missing.push(format!("{reason} ({})", places.join(", ")));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md does not explain these reasons (add a table row each):\n{}",
        missing.join("\n")
    );
}

#[test]
fn markdown_parts_are_read_as_github_renders_them() {
    let doc = parse(
        "# Title\n\n## Flags of `redis-operator run`\n\n```sh\nmake demo # x\n```\n## One instance's story\n## Title\n",
    );
    let known = anchors(&doc);
    for anchor in [
        "title",
        "flags-of-redis-operator-run",
        "one-instances-story",
        "title-1",
    ] {
        assert!(known.contains(anchor), "{anchor} not in {known:?}");
    }
    assert_eq!(doc.fences.len(), 1);
    assert_eq!(
        commands(&doc.fences[0].lines[0]),
        [vec!["make".to_owned(), "demo".to_owned()]]
    );
    let (spans, rest) = code_spans("see [a](b.md#c) and `[x](y)`");
    assert_eq!(spans, ["[x](y)"]);
    assert_eq!(markdown::links(&rest), ["b.md#c"]);
    assert_eq!(
        commands("$ export A=1; N=1000 make bench-scale && kubectl get x | grep 'a b'"),
        [
            vec!["export".to_owned(), "A=1".to_owned()],
            vec!["make".to_owned(), "bench-scale".to_owned()],
            vec!["kubectl".to_owned(), "get".to_owned(), "x".to_owned()],
            vec!["grep".to_owned(), "a b".to_owned()],
        ]
    );
}
