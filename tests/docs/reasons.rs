//! Finds every Event reason and condition reason the operator's sources can emit, following a
//! reason from where it is set (an `Event { reason }` or `ConditionValue::new`) back through
//! parameters, `let`s, matches, methods and constants to its string literals.

use std::collections::{BTreeMap, BTreeSet};

use super::rust_source::{
    Function, Source, calls, enclosing, functions, is_ident, literals_in, matching, split_list,
    string_literal, strip_conversions,
};

/// Strings an expression can hold, each with where its literal is (`path:line`).
type Values = BTreeMap<String, String>;

/// Field accesses whose struct the scanner cannot infer, with that struct's name: the reason is
/// then every value a `Struct { field: ... }` literal gives the field. A new indirection the
/// scanner cannot follow fails the check with a message pointing here.
const FIELD_TYPES: &[(&str, &str, &str)] = &[
    // `r` is the `Rejection` recorded for the instance (`state.specs.rejection()`), handed to
    // `decide::status` as a `FailedConfig`.
    ("src/actors/instance/status.rs", "r.reason", "Rejection"),
    ("src/decide/status.rs", "r.reason", "FailedConfig"),
    // A failure read back from status (`decide::recorded_rejection`, `recorded_halt`).
    ("src/decide/specs.rs", "recorded.reason", "RecordedFailure"),
    // `event` is a `Notice` that `decide` chose (src/decide/act.rs, src/decide/live_drift.rs).
    ("src/actors/instance/perform.rs", "event.reason", "Notice"),
    ("src/actors/instance/report.rs", "event.reason", "Notice"),
    ("src/actors/instance/live.rs", "event.reason", "Notice"),
    // Chosen by `decide::auth_step` (src/decide/auth.rs) and `decide::tls`.
    ("src/actors/instance/auth.rs", "event.reason", "Notice"),
    ("src/actors/instance/tls.rs", "event.reason", "Notice"),
    // The Event told (src/events/mod.rs): every `Told { reason }` literal, a `Notice`'s
    // among them.
    ("src/events/mod.rs", "told.reason", "Told"),
    ("src/decide/notice.rs", "self.reason", "Notice"),
];

/// What kind of reason was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `reason` of an Event.
    Event,
    /// `reason` of a status condition.
    Condition,
}

/// Each reason found, with where it was found (`path:line`).
pub type Found = BTreeMap<String, BTreeSet<(Kind, String)>>;

/// Every Event and condition reason in `sources`.
pub fn emitted(sources: &[Source]) -> Result<Found, String> {
    let scanner = Scanner::new(sources);
    let mut found = Found::new();
    for (index, source) in sources.iter().enumerate() {
        // kube's `Event { reason, .. }`: every Event the operator publishes is built here.
        for at in struct_literals(&source.code, "Event") {
            for value in scanner.field_values(index, at, "reason") {
                for (reason, place) in scanner.resolve(index, value, 0)? {
                    found
                        .entry(reason)
                        .or_default()
                        .insert((Kind::Event, place));
                }
            }
        }
        for paren in calls(&source.code, "ConditionValue::new(") {
            let args = split_list(&source.code, paren, false);
            let Some(&arg) = args.get(2) else {
                return Err(format!(
                    "{}:{}: ConditionValue::new without a reason",
                    source.path,
                    source.line_of(paren)
                ));
            };
            for (reason, place) in scanner.resolve(index, arg, 0)? {
                found
                    .entry(reason)
                    .or_default()
                    .insert((Kind::Condition, place));
            }
        }
    }
    Ok(found)
}

/// Offsets of the `{` of every `Name {` struct literal (not the `struct Name {` definition).
fn struct_literals(code: &str, name: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(name) {
        let start = from + at;
        from = start + name.len();
        let before = &code[..start];
        if before.ends_with(|c: char| is_ident(c) || c == ':') && !before.ends_with("::") {
            continue;
        }
        let prefix = before.trim_end();
        if prefix.ends_with("struct")
            || prefix.ends_with("enum")
            || prefix.ends_with("impl")
            || prefix.ends_with("for")
        {
            continue;
        }
        let rest = &code[from..];
        if rest.starts_with(|c: char| is_ident(c)) {
            continue;
        }
        if rest.trim_start().starts_with('{') {
            found.push(from + rest.find('{').expect("checked above"));
        }
    }
    found
}

struct Scanner<'a> {
    sources: &'a [Source],
    functions: Vec<Vec<Function>>,
}

/// How deep a reason may be passed along before the scanner gives up (a cycle, or a design
/// it was not written for).
const MAX_DEPTH: usize = 12;

impl<'a> Scanner<'a> {
    fn new(sources: &'a [Source]) -> Self {
        let functions = sources.iter().map(|s| functions(&s.code)).collect();
        Scanner { sources, functions }
    }

    fn at(&self, file: usize, at: usize) -> String {
        let source = &self.sources[file];
        format!("{}:{}", source.path, source.line_of(at))
    }

    /// The expressions a struct literal opened at `open` gives `field`.
    fn field_values(&self, file: usize, open: usize, field: &str) -> Vec<(usize, usize)> {
        let code = &self.sources[file].code;
        let mut values = Vec::new();
        for (a, b) in split_list(code, open, false) {
            let part = &code[a..b];
            if part == field {
                // Shorthand `field`: the value is the variable of that name.
                values.push((a, b));
            } else if let Some(value) = part
                .strip_prefix(field)
                .and_then(|r| r.trim_start().strip_prefix(':'))
            {
                values.push((b - value.trim_start().len(), b));
            }
        }
        values
    }

    /// Every string the expression at `range` of `file` can evaluate to.
    fn resolve(&self, file: usize, range: (usize, usize), depth: usize) -> Result<Values, String> {
        let code = &self.sources[file].code;
        let text = &code[range.0..range.1];
        let place = self.at(file, range.0);
        if depth > MAX_DEPTH {
            return Err(format!(
                "{place}: `{text}` is passed along too deeply to follow"
            ));
        }
        if let Some(literal) = string_literal(text) {
            return Ok(Values::from([(literal, place)]));
        }
        let expr = strip_conversions(text);
        let offset = range.0 + text.find(expr).unwrap_or(0);
        if let Some(found) = self.constant(expr) {
            return Ok(found);
        }
        if let Some(method) = expr
            .strip_suffix("()")
            .and_then(|e| e.rsplit_once('.'))
            .map(|(_, m)| m)
        {
            return self.method_results(method, &place, expr);
        }
        if let Some((_, _, struct_name)) = FIELD_TYPES
            .iter()
            .find(|(path, access, _)| self.sources[file].path.ends_with(path) && *access == expr)
        {
            let field = expr.rsplit_once('.').map_or(expr, |(_, f)| f);
            return self.struct_field_values(struct_name, field, depth);
        }
        if expr.chars().all(is_ident) && !expr.is_empty() {
            return self.variable(file, offset, expr, depth);
        }
        Err(format!(
            "{place}: cannot tell which reasons `{expr}` holds; teach tests/docs/reasons.rs (FIELD_TYPES) where it comes from"
        ))
    }

    /// A `const NAME: &str = "..."` or `const NAME: [&str; N] = [...]`: its literals. `NAME[i]`
    /// and `NAME` alike give them all.
    fn constant(&self, expr: &str) -> Option<Values> {
        let name: String = expr.chars().take_while(|c| is_ident(*c)).collect();
        let rest = &expr[name.len()..];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
        {
            return None;
        }
        if !(rest.is_empty() || rest.starts_with('[')) {
            return None;
        }
        let needle = format!("const {name}:");
        for source in self.sources {
            if let Some(at) = source.code.find(&needle) {
                let eq = at + source.code[at..].find('=')?;
                let end = statement_end(&source.code, eq + 1);
                return Some(
                    literals_in(&source.code, (at, end))
                        .into_iter()
                        .map(|(lit, at)| (lit, format!("{}:{}", source.path, source.line_of(at))))
                        .collect(),
                );
            }
        }
        None
    }

    /// The string literals `fn method(&self)` returns, from every definition of that name.
    fn method_results(&self, method: &str, place: &str, expr: &str) -> Result<Values, String> {
        let mut found = Values::new();
        for (file, functions) in self.functions.iter().enumerate() {
            for function in functions
                .iter()
                .filter(|f| f.name == method && f.method && f.params.is_empty())
            {
                let code = &self.sources[file].code;
                found.extend(
                    literals_in(code, function.body)
                        .into_iter()
                        .map(|(lit, at)| (lit, self.at(file, at))),
                );
            }
        }
        if found.is_empty() {
            return Err(format!(
                "{place}: `{expr}`: no method `{method}(&self)` returning literals"
            ));
        }
        Ok(found)
    }

    /// The values every `Struct { field: ... }` literal gives `field`.
    fn struct_field_values(&self, name: &str, field: &str, depth: usize) -> Result<Values, String> {
        let mut found = Values::new();
        for file in 0..self.sources.len() {
            for open in struct_literals(&self.sources[file].code, name) {
                for value in self.field_values(file, open, field) {
                    found.extend(self.resolve(file, value, depth + 1)?);
                }
            }
        }
        if found.is_empty() {
            return Err(format!("no `{name} {{ {field}: ... }}` literal found"));
        }
        Ok(found)
    }

    /// A variable `name` used at `at`: bound by a `let` in the enclosing function, or one of
    /// its parameters (then: whatever its callers pass).
    fn variable(&self, file: usize, at: usize, name: &str, depth: usize) -> Result<Values, String> {
        let code = &self.sources[file].code;
        let place = self.at(file, at);
        let function = enclosing(&self.functions[file], at)
            .ok_or_else(|| format!("{place}: `{name}` is used outside any function"))?;
        let body = &code[function.body.0..at];
        // The last `let` binding the name before this use.
        let simple = format!("let {name} =");
        let tuple = body
            .rfind("let (")
            .filter(|i| {
                let close = body[*i..].find(')').map_or(body.len(), |c| *i + c);
                body[*i + 5..close].split(',').any(|v| v.trim() == name)
            })
            .map(|i| function.body.0 + i);
        let single = body.rfind(&simple).map(|i| function.body.0 + i);
        match (single, tuple) {
            (Some(s), t) if t.is_none_or(|t| s > t) => {
                let value_start = s + simple.len();
                let end = statement_end(code, value_start);
                let value = code[value_start..end].trim_start();
                let start = end - value.len();
                if value.starts_with("match ") {
                    let open = start
                        + value
                            .find('{')
                            .ok_or_else(|| format!("{place}: a match without arms"))?;
                    let close =
                        matching(code, open).ok_or_else(|| format!("{place}: unbalanced match"))?;
                    return self.arms(file, (open, close), depth);
                }
                self.resolve(file, (start, end), depth + 1)
            }
            (_, Some(t)) => {
                // `let (a, b) = ...`: the constants the right-hand side reads.
                let eq = t + code[t..]
                    .find('=')
                    .ok_or_else(|| format!("{place}: a let without ="))?;
                let end = statement_end(code, eq + 1);
                let found: Values = identifiers(&code[eq + 1..end])
                    .filter_map(|ident| self.constant(ident))
                    .flatten()
                    .collect();
                if found.is_empty() {
                    return Err(format!(
                        "{place}: cannot tell which reasons `{name}` holds (bound by a tuple let)"
                    ));
                }
                Ok(found)
            }
            _ => self.parameter(function, name, &place, depth),
        }
    }

    /// The values of every arm of the match block `range` (`=> value`).
    fn arms(&self, file: usize, range: (usize, usize), depth: usize) -> Result<Values, String> {
        let code = &self.sources[file].code;
        let mut found = Values::new();
        for (a, b) in split_list(code, range.0, false) {
            let arm = &code[a..b];
            let Some(arrow) = arm.find("=>") else {
                continue;
            };
            let value = arm[arrow + 2..].trim_start();
            let start = b - value.len();
            found.extend(self.resolve(file, (start, b), depth + 1)?);
        }
        Ok(found)
    }

    /// What the callers of `function` pass as its parameter `name`.
    fn parameter(
        &self,
        function: &Function,
        name: &str,
        place: &str,
        depth: usize,
    ) -> Result<Values, String> {
        let index = function
            .params
            .iter()
            .position(|p| p == name)
            .ok_or_else(|| format!("{place}: cannot tell which reasons `{name}` holds (neither a let nor a parameter of `{}`)", function.name))?;
        let needle = if function.method {
            format!(".{}(", function.name)
        } else {
            format!("{}(", function.name)
        };
        let mut found = Values::new();
        let mut callers = 0;
        for caller in 0..self.sources.len() {
            let code = &self.sources[caller].code;
            for paren in calls(code, &needle) {
                if !function.method && code[..paren].ends_with(&format!(".{}", function.name)) {
                    continue;
                }
                let args = split_list(code, paren, false);
                let Some(&arg) = args.get(index) else {
                    // Another function of the same name with fewer parameters.
                    continue;
                };
                if args.len() != function.params.len() {
                    continue;
                }
                callers += 1;
                found.extend(self.resolve(caller, arg, depth + 1)?);
            }
        }
        if callers == 0 {
            return Err(format!(
                "{place}: `{name}` is a parameter of `{}`, which nothing calls",
                function.name
            ));
        }
        Ok(found)
    }
}

/// Where the statement starting at `from` ends: its `;` at depth zero.
fn statement_end(code: &str, from: usize) -> usize {
    let bytes = code.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => {
                i = matching(code, i).map_or(bytes.len(), |c| c + 1);
                continue;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b';' => return i,
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

fn identifiers(code: &str) -> impl Iterator<Item = &str> {
    code.split(|c: char| !is_ident(c)).filter(|w| !w.is_empty())
}
