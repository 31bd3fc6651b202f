//! Where the docs' links and path mentions lead: files and Markdown anchors in the repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::markdown::{Doc, anchors, parse};
use crate::repo;

/// Checks one link of `from` (a path relative to the repository); `None` when it resolves.
pub fn broken(from: &Path, target: &str, docs: &BTreeMap<PathBuf, Doc>) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let dir = from.parent().unwrap_or(Path::new(""));
    let linked = if path.is_empty() {
        from.to_owned()
    } else {
        normalize(&dir.join(path))
    };
    let full = repo().join(&linked);
    let display = linked.display().to_string();
    if !full.exists() {
        return Some(format!("{target}: {display} does not exist"));
    }
    if anchor.is_empty() {
        return None;
    }
    let known = match docs.get(&linked) {
        Some(doc) => anchors(doc),
        None if display.ends_with(".md") => anchors(&parse(
            &std::fs::read_to_string(&full).expect("read a linked file"),
        )),
        None => {
            return Some(format!(
                "{target}: an anchor into a file that is not Markdown"
            ));
        }
    };
    (!known.contains(anchor)).then(|| {
        format!("{target}: {display} has no heading with anchor #{anchor} (it has: {known:?})")
    })
}

/// `a/b/../c` as `a/c`.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

pub fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                walk(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

/// `docs/page.md` and `docs/page.md#anchor` (and `README.md#anchor`) mentioned in a line.
pub fn doc_references(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    for word in line.split(|c: char| c.is_whitespace() || "()`'\",;[]<>".contains(c)) {
        let word = word.trim_end_matches(['.', ':']);
        let is_page = word.starts_with("docs/") && (word.ends_with(".md") || word.contains(".md#"));
        let is_readme_anchor = word.starts_with("README.md#");
        if is_page || is_readme_anchor {
            found.push(word.to_owned());
        }
    }
    found
}

/// The repository path a code span names (`src/...`, `deploy/...`), if it names one.
pub fn mentioned_path(span: &str) -> Option<&str> {
    const ROOTS: [&str; 8] = [
        "src/",
        "tests/",
        "hack/",
        "deploy/",
        "dashboards/",
        "examples/",
        "docs/",
        ".ci/",
    ];
    let word = span.split_whitespace().next()?;
    let word = word.trim_end_matches([',', '.', ':', ';']);
    ROOTS.iter().any(|r| word.starts_with(r)).then_some(word)
}

/// Why the repository path `path` is not there; `None` when it is.
pub fn missing(path: &str) -> Option<String> {
    if repo().join(path).exists() {
        return None;
    }
    Some(format!("`{path}` does not exist"))
}
