//! Just enough Rust lexing to read the operator's sources as text: comments blanked, test
//! modules dropped, balanced brackets, call arguments and enclosing functions found.

use std::path::{Path, PathBuf};

/// One source file, as the scanner sees it.
pub struct Source {
    /// Path relative to the repository, for messages.
    pub path: String,
    /// The file's text with comments and `#[cfg(test)]` modules blanked out (same length, so
    /// offsets still give line numbers).
    pub code: String,
}

impl Source {
    /// `text` as read from `path`, prepared for scanning.
    pub fn new(path: &str, text: &str) -> Self {
        let code = blank_test_modules(&blank_comments(text));
        Source {
            path: path.to_owned(),
            code,
        }
    }

    /// 1-based line of byte offset `at`.
    pub fn line_of(&self, at: usize) -> usize {
        self.code[..at].matches('\n').count() + 1
    }
}

/// Every `.rs` file under `dir`, except those declared as `#[cfg(test)] mod name;` and their
/// submodules.
pub fn load_tree(root: &Path, dir: &str) -> Vec<Source> {
    let mut files = Vec::new();
    collect(&root.join(dir), &mut files);
    files.sort();
    let mut sources: Vec<Source> = files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).expect("read a source file");
            let rel = file.strip_prefix(root).unwrap_or(file);
            Source::new(&rel.to_string_lossy(), &text)
        })
        .collect();
    let test_only: Vec<PathBuf> = files
        .iter()
        .zip(&sources)
        .flat_map(|(file, source)| {
            let dir = file.parent().expect("a file has a directory").to_owned();
            let dir = match file.file_name().and_then(|n| n.to_str()) {
                Some("mod.rs" | "lib.rs" | "main.rs") => dir,
                _ => dir.join(file.file_stem().expect("a file stem")),
            };
            test_module_declarations(&source.code)
                .into_iter()
                .flat_map(move |name| {
                    [
                        dir.join(format!("{name}.rs")),
                        dir.join(name).join("mod.rs"),
                    ]
                })
        })
        .collect();
    // A test-only module's own submodules (`tests.rs` declaring `mod rows;` in `tests/`) are
    // test code too.
    let test_dirs: Vec<PathBuf> = test_only
        .iter()
        .map(|file| match file.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs") => file.parent().expect("a file has a directory").to_owned(),
            _ => file.with_extension(""),
        })
        .collect();
    let keep: Vec<bool> = files
        .iter()
        .map(|f| !test_only.contains(f) && !test_dirs.iter().any(|d| f.starts_with(d)))
        .collect();
    let mut keep = keep.into_iter();
    sources.retain(|_| keep.next().unwrap_or(true));
    sources
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Names `n` of every `#[cfg(test)] mod n;` in `code`.
fn test_module_declarations(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("#[cfg(test)]") {
        let after = from + found + "#[cfg(test)]".len();
        let rest = code[after..].trim_start();
        if let Some(decl) = rest.strip_prefix("mod ") {
            let name: String = decl.chars().take_while(|c| is_ident(*c)).collect();
            if decl[name.len()..].trim_start().starts_with(';') {
                names.push(name);
            }
        }
        from = after;
    }
    names
}

/// Whether `c` may appear in an identifier.
pub fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Where the string literal, char literal or lifetime starting at `at` ends, if one does.
fn literal_end(bytes: &[u8], at: usize) -> Option<usize> {
    let raw_start = match bytes[at] {
        b'r' if at == 0 || !is_ident(bytes[at - 1] as char) => Some(at + 1),
        b'b' if bytes.get(at + 1) == Some(&b'r')
            && (at == 0 || !is_ident(bytes[at - 1] as char)) =>
        {
            Some(at + 2)
        }
        _ => None,
    };
    if let Some(mut i) = raw_start {
        let hashes = bytes[i..].iter().take_while(|b| **b == b'#').count();
        i += hashes;
        if bytes.get(i) == Some(&b'"') {
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let end = bytes[i + 1..]
                .windows(close.len())
                .position(|w| w == close.as_slice())?;
            return Some(i + 1 + end + close.len());
        }
        return None;
    }
    match bytes[at] {
        b'"' => {
            let mut i = at + 1;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 2,
                    b'"' => return Some(i + 1),
                    _ => i += 1,
                }
            }
            Some(bytes.len())
        }
        // A char literal ('x', '\n', '"'); otherwise a lifetime, which ends at once.
        b'\'' if bytes.get(at + 1) == Some(&b'\\') => {
            let close = bytes[at + 2..].iter().position(|b| *b == b'\'')?;
            Some(at + 2 + close + 1)
        }
        b'\'' if bytes.get(at + 2) == Some(&b'\'') => Some(at + 3),
        b'\'' => Some(at + 1),
        _ => None,
    }
}

/// `text` with `//` and `/* */` comments replaced by spaces (newlines kept).
pub fn blank_comments(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                out[i] = b' ';
                i += 1;
            }
        } else if bytes[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < bytes.len() {
                if bytes[i..].starts_with(b"/*") {
                    depth += 1;
                    out[i] = b' ';
                    out[i + 1] = b' ';
                    i += 2;
                } else if bytes[i..].starts_with(b"*/") {
                    depth -= 1;
                    out[i] = b' ';
                    out[i + 1] = b' ';
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if bytes[i] != b'\n' {
                        out[i] = b' ';
                    }
                    i += 1;
                }
            }
        } else if let Some(end) = literal_end(bytes, i) {
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    // Only ASCII bytes inside comments were replaced, by ASCII: still UTF-8 when every
    // multi-byte character sat outside comments; otherwise blank it byte by byte.
    String::from_utf8(out).unwrap_or_else(|e| {
        e.into_bytes()
            .into_iter()
            .map(|b| if b.is_ascii() { b as char } else { ' ' })
            .collect()
    })
}

/// `code` with every `#[cfg(test)] mod name { ... }` blanked out.
fn blank_test_modules(code: &str) -> String {
    let mut out = code.to_owned();
    let mut from = 0;
    while let Some(found) = out[from..].find("#[cfg(test)]") {
        let start = from + found;
        let after = start + "#[cfg(test)]".len();
        let rest = &out[after..];
        let trimmed = rest.trim_start();
        // A test module may be visible to the crate's other tests: `pub(crate) mod fixtures`.
        let trimmed = ["pub(crate) ", "pub "]
            .iter()
            .find_map(|vis| trimmed.strip_prefix(vis))
            .unwrap_or(trimmed);
        let Some(decl) = trimmed.strip_prefix("mod ") else {
            from = after;
            continue;
        };
        let name_len = decl.chars().take_while(|c| is_ident(*c)).count();
        let brace = after + (rest.len() - trimmed.len()) + "mod ".len() + name_len;
        if !out[brace..].trim_start().starts_with('{') {
            from = after;
            continue;
        }
        let open = brace + out[brace..].find('{').expect("checked above");
        let Some(close) = matching(&out, open) else {
            break;
        };
        // One space per byte, so every offset after it stays where it was.
        let blank: String = out[start..=close]
            .chars()
            .map(|c| match c {
                '\n' => "\n".to_owned(),
                c => " ".repeat(c.len_utf8()),
            })
            .collect();
        out.replace_range(start..=close, &blank);
        from = close;
    }
    out
}

/// The offset of the bracket closing the one at `open` (`(`, `[` or `{`), skipping literals.
pub fn matching(code: &str, open: usize) -> Option<usize> {
    let bytes = code.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            b'"' | b'\'' | b'r' | b'b' => {
                if let Some(end) = literal_end(bytes, i) {
                    i = end;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The top-level comma-separated pieces between `open` (a `(`, `[` or `{`) and its match, as
/// byte ranges, trimmed. Angle brackets count as brackets when `generics` is set.
pub fn split_list(code: &str, open: usize, generics: bool) -> Vec<(usize, usize)> {
    let Some(close) = matching(code, open) else {
        return Vec::new();
    };
    let bytes = code.as_bytes();
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = open + 1;
    let mut i = open + 1;
    while i < close {
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b'<' if generics => depth += 1,
            b'>' if generics && bytes[i - 1] != b'-' && bytes[i - 1] != b'=' => depth -= 1,
            b',' if depth == 0 => {
                parts.push(trim(code, start, i));
                start = i + 1;
            }
            b'"' | b'\'' | b'r' | b'b' => {
                if let Some(end) = literal_end(bytes, i) {
                    i = end;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let last = trim(code, start, close);
    if last.0 < last.1 {
        parts.push(last);
    }
    parts
}

fn trim(code: &str, start: usize, end: usize) -> (usize, usize) {
    let piece = &code[start..end];
    let lead = piece.len() - piece.trim_start().len();
    (start + lead, start + piece.trim_end().len())
}

/// A function definition: its name, parameters (without `self`) and body.
pub struct Function {
    /// Its name.
    pub name: String,
    /// Whether it takes `self` (so it is called as `x.name(...)`).
    pub method: bool,
    /// Parameter names, `self` excluded, in order.
    pub params: Vec<String>,
    /// Byte range of the body, braces included.
    pub body: (usize, usize),
}

/// Every function defined in `code` (closures excluded).
pub fn functions(code: &str) -> Vec<Function> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("fn ") {
        let start = from + at;
        from = start + 3;
        if start > 0 && is_ident(code.as_bytes()[start - 1] as char) {
            continue;
        }
        let name: String = code[start + 3..]
            .chars()
            .take_while(|c| is_ident(*c))
            .collect();
        if name.is_empty() {
            continue;
        }
        let Some(paren) = code[start..].find('(').map(|p| start + p) else {
            continue;
        };
        let Some(params_end) = matching(code, paren) else {
            continue;
        };
        let params: Vec<String> = split_list(code, paren, true)
            .into_iter()
            .map(|(a, b)| code[a..b].to_owned())
            .collect();
        let method = params.first().is_some_and(|p| {
            let p = p.trim_start_matches("mut ");
            p == "self"
                || p.starts_with("&self")
                || p.starts_with("&mut self")
                || p.starts_with("self:")
        });
        let names = params
            .iter()
            .skip(usize::from(method))
            .map(|p| {
                p.trim_start_matches("mut ")
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            })
            .collect();
        // The body starts at the first `{` after the signature, unless a `;` ends it first.
        let rest = &code[params_end..];
        let Some(brace) = rest
            .find(['{', ';'])
            .filter(|i| rest.as_bytes()[*i] == b'{')
        else {
            continue;
        };
        let open = params_end + brace;
        let Some(close) = matching(code, open) else {
            continue;
        };
        found.push(Function {
            name,
            method,
            params: names,
            body: (open, close + 1),
        });
    }
    found
}

/// The innermost function whose body holds offset `at`.
pub fn enclosing(functions: &[Function], at: usize) -> Option<&Function> {
    functions
        .iter()
        .filter(|f| f.body.0 < at && at < f.body.1)
        .min_by_key(|f| f.body.1 - f.body.0)
}

/// Offsets of every `needle` in `code` that starts a call (`needle` ends with `(`), with the
/// offset of that `(`; a `fn needle(` definition is not a call.
pub fn calls(code: &str, needle: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(needle) {
        let start = from + at;
        from = start + needle.len();
        let before = &code[..start];
        let word_start = needle.starts_with(|c: char| is_ident(c));
        if word_start && before.ends_with(|c: char| is_ident(c)) {
            continue;
        }
        if before.trim_end().ends_with("fn") {
            continue;
        }
        found.push(start + needle.len() - 1);
    }
    found
}

/// The string literal `expr` is, if it is one: `"x"`, possibly with `.into()` and the like.
pub fn string_literal(expr: &str) -> Option<String> {
    let expr = strip_conversions(expr);
    let inner = expr.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains(['"', '\\', '{'])).then(|| inner.to_owned())
}

/// `expr` without a trailing `.into()`, `.to_owned()` or `.to_string()` and a leading `&`.
pub fn strip_conversions(expr: &str) -> &str {
    let mut expr = expr.trim().trim_start_matches('&');
    loop {
        let before = expr;
        for suffix in [".into()", ".to_owned()", ".to_string()", ".clone()"] {
            expr = expr.strip_suffix(suffix).unwrap_or(expr).trim_end();
        }
        if let Some(inner) = expr.strip_prefix("Some(").and_then(|e| e.strip_suffix(')')) {
            expr = inner.trim();
        }
        if expr == before {
            return expr;
        }
    }
}

/// Every plain string literal in `code[range]`, with its offset.
pub fn literals_in(code: &str, range: (usize, usize)) -> Vec<(String, usize)> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = range.0;
    while i < range.1 {
        if let Some(end) = literal_end(bytes, i) {
            if let Some(lit) = string_literal(&code[i..end]) {
                out.push((lit, i));
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}
