//! Glob patterns of the policy language: `*` (any run, also empty) and `?` (one byte).
//!
//! Hand-written rather than a crate: policy values are short ASCII names, only two
//! wildcards exist, and the common shapes (exact, `prefix*`, `*suffix`, `*`) are matched
//! without any scanning, which keeps evaluation of a thousand rules in microseconds.

/// One compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Glob {
    /// `*`: anything.
    Any,
    /// No wildcard.
    Exact(String),
    /// `abc*`.
    Prefix(String),
    /// `*abc`.
    Suffix(String),
    /// Anything else with `*` or `?`.
    Wild(String),
}

impl Glob {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Self {
        let wild = |c: char| c == '*' || c == '?';
        if pattern == "*" {
            return Self::Any;
        }
        if !pattern.contains(wild) {
            return Self::Exact(pattern.to_string());
        }
        if let Some(head) = pattern.strip_suffix('*')
            && !head.contains(wild)
        {
            return Self::Prefix(head.to_string());
        }
        if let Some(tail) = pattern.strip_prefix('*')
            && !tail.contains(wild)
        {
            return Self::Suffix(tail.to_string());
        }
        Self::Wild(pattern.to_string())
    }

    /// The literal value when the pattern has no wildcard (index keys).
    pub fn exact(&self) -> Option<&str> {
        match self {
            Self::Exact(s) => Some(s),
            _ => None,
        }
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(s) => s == value,
            Self::Prefix(p) => value.starts_with(p.as_str()),
            Self::Suffix(s) => value.ends_with(s.as_str()),
            Self::Wild(p) => wild_match(p.as_bytes(), value.as_bytes()),
        }
    }
}

/// Iterative glob match with single-star backtracking: linear for one `*`, and bounded by
/// `pattern.len() * value.len()` in general (no exponential blow-up).
fn wild_match(pattern: &[u8], value: &[u8]) -> bool {
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, v));
                p += 1;
            }
            Some(b'?') => {
                p += 1;
                v += 1;
            }
            Some(c) if *c == value[v] => {
                p += 1;
                v += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    p = sp + 1;
                    v = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// A list of patterns, any of which may match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobSet(pub Vec<Glob>);

impl GlobSet {
    /// Compiles every pattern.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        Self(patterns.iter().map(|p| Glob::new(p.as_ref())).collect())
    }

    /// Whether any pattern matches `value`.
    pub fn matches(&self, value: &str) -> bool {
        self.0.iter().any(|g| g.matches(value))
    }

    /// Whether one of the patterns is `*`.
    pub fn is_any(&self) -> bool {
        self.0.iter().any(|g| matches!(g, Glob::Any))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_matches() {
        let cases = [
            ("*", "", true),
            ("*", "prod", true),
            ("prod", "prod", true),
            ("prod", "prod-1", false),
            ("prod-*", "prod-1", true),
            ("prod-*", "prod-", true),
            ("prod-*", "prod", false),
            ("*-prod", "eu-prod", true),
            ("*-prod", "eu-prod2", false),
            ("team-*-prod", "team-a-prod", true),
            ("team-*-prod", "team--prod", true),
            ("team-*-prod", "team-a-dev", false),
            ("web-?", "web-1", true),
            ("web-?", "web-12", false),
            ("*sh*", "bash -c x", true),
            ("*sh*", "python", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
        ];
        for (pattern, value, want) in cases {
            assert_eq!(
                Glob::new(pattern).matches(value),
                want,
                "{pattern} ~ {value}"
            );
        }
        assert_eq!(Glob::new("pods").exact(), Some("pods"));
        assert_eq!(Glob::new("pod*").exact(), None);
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = "*a*a*a*a*a*a*a*a*a*a*b";
        let value = "a".repeat(2000);
        assert!(!Glob::new(pattern).matches(&value));
    }
}
