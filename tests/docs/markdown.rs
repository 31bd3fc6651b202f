//! Just enough Markdown for the docs check: fenced blocks, code spans, links, headings and
//! their GitHub anchors, and the shell commands the docs show.

use std::collections::BTreeSet;

/// A fenced code block.
pub struct Fence {
    /// Its info string (`sh`, `text`, ...).
    pub info: String,
    /// Its lines.
    pub lines: Vec<String>,
    /// 1-based line of its opening fence.
    pub line: usize,
    /// The HTML comment on the line before the fence, if any: `<!-- note -->`.
    pub note: Option<String>,
}

/// A document split into fenced blocks and prose (the other lines, with their numbers).
pub struct Doc {
    /// The fenced blocks.
    pub fences: Vec<Fence>,
    /// Lines outside fences, each with its 1-based number.
    pub prose: Vec<(usize, String)>,
}

/// Splits `text` into fences and prose.
pub fn parse(text: &str) -> Doc {
    let mut fences = Vec::new();
    let mut prose = Vec::new();
    let mut open: Option<Fence> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        match open.as_mut() {
            Some(_) if line.trim_start().starts_with("```") => {
                fences.push(open.take().expect("a fence is open"));
            }
            Some(fence) => fence.lines.push(line.to_owned()),
            None if line.trim_start().starts_with("```") => {
                let note = prose
                    .last()
                    .filter(|(n, _): &&(usize, String)| *n + 1 == number)
                    .and_then(|(_, l)| {
                        let inner = l.trim().strip_prefix("<!--")?.strip_suffix("-->")?;
                        Some(inner.trim().to_owned())
                    });
                open = Some(Fence {
                    note,
                    info: line.trim_start().trim_start_matches('`').trim().to_owned(),
                    lines: Vec::new(),
                    line: number,
                });
            }
            None => prose.push((number, line.to_owned())),
        }
    }
    Doc { fences, prose }
}

/// The code spans of one line of prose, and the line with them blanked out.
pub fn code_spans(line: &str) -> (Vec<String>, String) {
    let mut spans = Vec::new();
    let mut rest = String::with_capacity(line.len());
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            rest.push(chars[i]);
            i += 1;
            continue;
        }
        let ticks = chars[i..].iter().take_while(|c| **c == '`').count();
        let body_start = i + ticks;
        let mut j = body_start;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let run = chars[j..].iter().take_while(|c| **c == '`').count();
                if run == ticks {
                    close = Some(j);
                    break;
                }
                j += run;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                let body: String = chars[body_start..end].iter().collect();
                spans.push(body.trim().to_owned());
                rest.extend(std::iter::repeat_n(' ', end + ticks - i));
                i = end + ticks;
            }
            None => {
                rest.extend(&chars[i..body_start]);
                i = body_start;
            }
        }
    }
    (spans, rest)
}

/// Link targets `[text](target)` in a line with its code spans blanked.
pub fn links(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = line[from..].find("](") {
        let start = from + at + 2;
        from = start;
        if let Some(end) = line[start..].find(')') {
            let target = line[start..start + end]
                .split_whitespace()
                .next()
                .unwrap_or("");
            if !target.is_empty() {
                found.push(target.to_owned());
            }
        }
    }
    found
}

/// The anchors GitHub gives the headings of `doc`.
pub fn anchors(doc: &Doc) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in &doc.prose {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// GitHub's anchor for a heading: its text in lowercase, punctuation dropped, spaces as `-`.
pub fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The simple commands of one line of shell: split at `;`, `&&`, `||`, `|` and `&`, each as
/// its words, quotes removed, comments dropped, a leading `$ ` prompt and `VAR=value`
/// assignments skipped.
pub fn commands(line: &str) -> Vec<Vec<String>> {
    let line = line.trim_start();
    let line = line.strip_prefix("$ ").unwrap_or(line);
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    let end_word = |word: &mut String, words: &mut Vec<String>, in_word: &mut bool| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') if !in_word => break,
            (None, ';' | '|' | '&') => {
                end_word(&mut word, &mut words, &mut in_word);
                while chars.peek().is_some_and(|n| matches!(n, '|' | '&')) {
                    chars.next();
                }
                commands.push(std::mem::take(&mut words));
            }
            (None, c) if c.is_whitespace() => end_word(&mut word, &mut words, &mut in_word),
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    end_word(&mut word, &mut words, &mut in_word);
    commands.push(words);
    commands
        .into_iter()
        .map(|words| {
            words
                .into_iter()
                .skip_while(|w| {
                    w.split_once('=').is_some_and(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                    })
                })
                .collect::<Vec<_>>()
        })
        .filter(|words| !words.is_empty())
        .collect()
}
