//! A small JSON path syntax for masking rules, and applying it to a `serde_json::Value`.
//!
//! ```text
//! path     := segment ('.' segment)*
//! segment  := key suffix* | '*' suffix* | '~' REGEX        (the '~' form only last)
//! suffix   := '[*]' | '[?' FIELD '~' REGEX ']'
//! ```
//! - `key`: an object member by exact name (`data`, `spec`);
//! - `*`: every member of an object, or every element of an array;
//! - `~REGEX`: every member whose name matches REGEX (runs to the end of the path, so it
//!   may contain dots), e.g. `data.~(?i)password|token`;
//! - `[*]`: every element of the array; `[?name~REGEX]`: the elements that are objects
//!   whose string member `name` matches REGEX (brackets inside REGEX must balance).
//!
//! Example: `spec.containers[*].env[?name~(?i)PASSWORD|TOKEN|SECRET|KEY].value`.
//! Paths that do not exist in an object are no-ops.

use super::MaskError;
use regex::Regex;
use serde_json::Value;

/// A parsed path.
#[derive(Debug, Clone)]
pub struct JsonPath {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
struct Segment {
    base: Base,
    suffixes: Vec<Suffix>,
}

#[derive(Debug, Clone)]
enum Base {
    Key(String),
    Any,
    KeyPattern(Regex),
}

#[derive(Debug, Clone)]
enum Suffix {
    All,
    Filter { field: String, pattern: Regex },
}

impl JsonPath {
    /// Parses `text` (see the module docs for the syntax).
    pub fn parse(text: &str) -> Result<Self, MaskError> {
        let bad = |reason: &str| MaskError::Path {
            path: text.to_string(),
            reason: reason.to_string(),
        };
        let regex = |pattern: &str| {
            Regex::new(pattern).map_err(|e| MaskError::Regex {
                pattern: pattern.to_string(),
                reason: e.to_string(),
            })
        };
        let mut segments = Vec::new();
        let mut rest = text;
        loop {
            if let Some(pattern) = rest.strip_prefix('~') {
                if pattern.is_empty() {
                    return Err(bad("empty key pattern"));
                }
                segments.push(Segment {
                    base: Base::KeyPattern(regex(pattern)?),
                    suffixes: Vec::new(),
                });
                break;
            }
            let name_end = rest.find(['.', '[']).unwrap_or(rest.len());
            let name = &rest[..name_end];
            let base = match name {
                "" => return Err(bad("empty segment")),
                "*" => Base::Any,
                key => Base::Key(key.to_string()),
            };
            rest = &rest[name_end..];
            let mut suffixes = Vec::new();
            while let Some(inner) = rest.strip_prefix('[') {
                let close = matching_bracket(inner).ok_or_else(|| bad("unclosed '['"))?;
                let body = &inner[..close];
                rest = &inner[close + 1..];
                if body == "*" {
                    suffixes.push(Suffix::All);
                } else if let Some(filter) = body.strip_prefix('?') {
                    let (field, pattern) = filter
                        .split_once('~')
                        .ok_or_else(|| bad("filter must be [?field~REGEX]"))?;
                    if field.is_empty() || pattern.is_empty() {
                        return Err(bad("filter must be [?field~REGEX]"));
                    }
                    suffixes.push(Suffix::Filter {
                        field: field.to_string(),
                        pattern: regex(pattern)?,
                    });
                } else {
                    return Err(bad("brackets hold [*] or [?field~REGEX]"));
                }
            }
            segments.push(Segment { base, suffixes });
            match rest.strip_prefix('.') {
                Some(next) => rest = next,
                None if rest.is_empty() => break,
                None => return Err(bad("expected '.' between segments")),
            }
        }
        Ok(Self {
            text: text.to_string(),
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Calls `f` on every value the path selects in `root`.
    pub fn for_each_mut(&self, root: &mut Value, f: &mut dyn FnMut(&mut Value)) {
        visit(root, &self.segments, f);
    }
}

/// Index of the `]` closing the bracket opened just before `s`, with nesting.
fn matching_bracket(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' => depth += 1,
            ']' if depth == 0 => return Some(i),
            ']' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn visit(value: &mut Value, segments: &[Segment], f: &mut dyn FnMut(&mut Value)) {
    let Some((seg, rest)) = segments.split_first() else {
        f(value);
        return;
    };
    let mut then = |v: &mut Value| apply_suffixes(v, &seg.suffixes, rest, f);
    match (&seg.base, value) {
        (Base::Key(key), Value::Object(map)) => {
            if let Some(v) = map.get_mut(key) {
                then(v);
            }
        }
        (Base::Any, Value::Object(map)) => map.values_mut().for_each(then),
        (Base::Any, Value::Array(items)) => items.iter_mut().for_each(then),
        (Base::KeyPattern(re), Value::Object(map)) => map
            .iter_mut()
            .filter(|(k, _)| re.is_match(k))
            .for_each(|(_, v)| then(v)),
        _ => {}
    }
}

fn apply_suffixes(
    value: &mut Value,
    suffixes: &[Suffix],
    rest: &[Segment],
    f: &mut dyn FnMut(&mut Value),
) {
    let Some((suffix, more)) = suffixes.split_first() else {
        visit(value, rest, f);
        return;
    };
    let Value::Array(items) = value else {
        return;
    };
    for item in items {
        let selected = match suffix {
            Suffix::All => true,
            Suffix::Filter { field, pattern } => item
                .get(field)
                .and_then(Value::as_str)
                .is_some_and(|s| pattern.is_match(s)),
        };
        if selected {
            apply_suffixes(item, more, rest, f);
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(path: &str, mut v: Value) -> Value {
        JsonPath::parse(path)
            .unwrap()
            .for_each_mut(&mut v, &mut |x| *x = json!("X"));
        v
    }

    #[test]
    fn keys_wildcards_and_filters() {
        let pod = json!({"spec": {"containers": [
            {"env": [{"name": "DB_PASSWORD", "value": "p"}, {"name": "MODE", "value": "m"},
                     {"name": "API_TOKEN", "valueFrom": {}}]},
            {"env": [{"name": "AWS_SECRET_KEY", "value": "s"}]}]}});
        let out = set(
            "spec.containers[*].env[?name~PASSWORD|TOKEN|SECRET|KEY].value",
            pod,
        );
        assert_eq!(out["spec"]["containers"][0]["env"][0]["value"], "X");
        assert_eq!(out["spec"]["containers"][0]["env"][1]["value"], "m");
        assert!(
            out["spec"]["containers"][0]["env"][2]
                .get("value")
                .is_none()
        );
        assert_eq!(out["spec"]["containers"][1]["env"][0]["value"], "X");
        let out = set("data.*", json!({"data": {"a": "1", "b": "2"}}));
        assert_eq!(out, json!({"data": {"a": "X", "b": "X"}}));
    }

    #[test]
    fn key_patterns_may_hold_dots_and_brackets() {
        let cm = json!({"data": {"db.password": "1", "app.mode": "2", "TOKEN_1": "3"}});
        let out = set("data.~(?i)pass.*|token_[0-9]", cm);
        assert_eq!(
            out,
            json!({"data": {"db.password": "X", "app.mode": "2", "TOKEN_1": "X"}})
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in [
            "", "a..b", "a[", "a[x]", "a[?name]", "a[*]b", "~", "a.[?~x]",
        ] {
            assert!(JsonPath::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(JsonPath::parse("a[?name~[A-Z]+]").is_ok());
    }
}
