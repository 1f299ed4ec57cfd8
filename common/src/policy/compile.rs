//! Validation of a parsed policy file and its compilation into [`Policy`]: globs compiled,
//! defaults filled in, and rules indexed by resource so that a request looks only at the
//! rules that could match it.

use super::glob::{Glob, GlobSet};
use super::model::{self, API_VERSION, KIND, PolicyFile, RuleSpec};
use super::{Action, ApprovalMode, ApprovalSpec, Issue, PolicyError, Result};
use serde_saphyr::{Location, Spanned};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// Verbs the API server knows (resource verbs, RBAC's special verbs, and the lower-case
/// HTTP methods non-resource requests are authorized with). Anything else is a typo.
const KNOWN_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "impersonate",
    "proxy",
    "bind",
    "escalate",
    "approve",
    "sign",
    "use",
    "post",
    "put",
    "head",
    "options",
    "*",
];

/// Largest policy file accepted (bytes); a real one is far smaller.
pub const MAX_POLICY_BYTES: usize = 4 << 20;

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its unique name.
    pub name: String,
    /// Line of the rule in the file.
    pub line: u64,
    /// What it decides.
    pub action: Action,
    /// Options applied when it matches.
    pub options: RuleOptions,
    pub(super) users: GlobSet,
    pub(super) groups: GlobSet,
    pub(super) verbs: Option<GlobSet>,
    pub(super) api_groups: Option<GlobSet>,
    pub(super) resources: Option<GlobSet>,
    /// Absent in the file = `[""]`: the main resource only (`[exec]` with `commands`).
    pub(super) subresources: GlobSet,
    pub(super) namespaces: Option<GlobSet>,
    pub(super) names: Option<GlobSet>,
    pub(super) namespace_labels: Option<BTreeMap<String, String>>,
    pub(super) commands: Option<GlobSet>,
    pub(super) dry_run: Option<bool>,
    pub(super) non_resource_urls: Option<GlobSet>,
}

/// The options of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleOptions {
    /// Masking profile name.
    pub mask: Option<String>,
    /// Record sessions.
    pub record: bool,
    /// eBPF tracing.
    pub trace: bool,
    /// Text for the user.
    pub reason: Option<String>,
    /// Approval settings (`require_approval` rules only).
    pub approval: Option<ApprovalSpec>,
}

/// A validated, compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `metadata.name`.
    pub name: String,
    /// Content version: the first 16 hex digits of the SHA-256 of the file text, so the
    /// same file has the same version on every collector and across restarts.
    pub version: String,
    /// The source text (what the collector serves and the agent caches).
    pub source: String,
    pub(super) rules: Vec<Rule>,
    /// The index: which rules can match a request, as bitsets over rule positions.
    pub(super) index: Index,
}

impl Policy {
    /// Parses, validates and compiles policy text.
    pub fn parse(text: &str) -> Result<Policy> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::one(
                0,
                0,
                format!("policy is larger than {MAX_POLICY_BYTES} bytes"),
            ));
        }
        let file: PolicyFile = serde_saphyr::from_str(text).map_err(yaml_error)?;
        let mut issues = Vec::new();
        check_header(&file, &mut issues);
        let mut names = HashSet::new();
        let mut rules = Vec::with_capacity(file.rules.len());
        for spec in &file.rules {
            if let Some(rule) = compile_rule(spec, &mut names, &mut issues) {
                rules.push(rule);
            }
        }
        if !issues.is_empty() {
            return Err(PolicyError { issues });
        }
        let policy = Policy {
            name: file.metadata.name,
            version: version_of(text),
            source: text.to_string(),
            index: Index::build(&rules),
            rules,
        };
        Ok(policy)
    }

    /// The rules in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// Rules as bitsets (bit `i` = rule `i`), so a request intersects the rules about its
/// resource with the rules about its subject and checks only those, in file order.
#[derive(Debug, Clone, Default)]
pub(super) struct Index {
    /// Words per bitset.
    words: usize,
    /// Per exact resource: rules naming it, plus every rule without an exact resource list.
    by_resource: HashMap<String, Vec<u64>>,
    /// Resource rules without an exact resource list (for resources no rule names).
    any_resource: Vec<u64>,
    /// Non-resource rules.
    non_resource: Vec<u64>,
    /// Per exact username.
    by_user: HashMap<String, Vec<u64>>,
    /// Per exact group.
    by_group: HashMap<String, Vec<u64>>,
    /// Rules with a glob in their subjects (always candidates).
    any_subject: Vec<u64>,
}

impl Index {
    fn build(rules: &[Rule]) -> Self {
        let words = rules.len().div_ceil(64).max(1);
        let empty = vec![0u64; words];
        let set = |bits: &mut Vec<u64>, i: usize| bits[i / 64] |= 1 << (i % 64);
        let mut index = Index {
            words,
            any_resource: empty.clone(),
            non_resource: empty.clone(),
            any_subject: empty.clone(),
            ..Index::default()
        };
        let mut exact_resources: Vec<Option<Vec<&str>>> = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let exact_subjects: Option<Vec<&str>> = rule.users.0.iter().map(Glob::exact).collect();
            let exact_groups: Option<Vec<&str>> = rule.groups.0.iter().map(Glob::exact).collect();
            match (exact_subjects, exact_groups) {
                (Some(users), Some(groups)) => {
                    for u in users {
                        set(
                            index
                                .by_user
                                .entry(u.into())
                                .or_insert_with(|| empty.clone()),
                            i,
                        );
                    }
                    for g in groups {
                        set(
                            index
                                .by_group
                                .entry(g.into())
                                .or_insert_with(|| empty.clone()),
                            i,
                        );
                    }
                }
                _ => set(&mut index.any_subject, i),
            }
            if rule.non_resource_urls.is_some() {
                set(&mut index.non_resource, i);
                exact_resources.push(None);
                continue;
            }
            let exact: Option<Vec<&str>> = rule
                .resources
                .as_ref()
                .and_then(|r| r.0.iter().map(Glob::exact).collect());
            if exact.is_none() {
                set(&mut index.any_resource, i);
            }
            exact_resources.push(exact);
        }
        for (i, exact) in exact_resources.iter().enumerate() {
            for r in exact.iter().flatten() {
                let any = index.any_resource.clone();
                set(index.by_resource.entry((*r).into()).or_insert(any), i);
            }
        }
        index
    }

    /// Candidate rules of a request: its resource's rules ∩ its subject's rules.
    pub(super) fn candidates(
        &self,
        resource_request: bool,
        resource: &str,
        user: &str,
        groups: &[String],
    ) -> Vec<u64> {
        let by_resource = if resource_request {
            self.by_resource.get(resource).unwrap_or(&self.any_resource)
        } else {
            &self.non_resource
        };
        let mut subjects = self.any_subject.clone();
        let mut or = |bits: Option<&Vec<u64>>| {
            if let Some(bits) = bits {
                for (a, b) in subjects.iter_mut().zip(bits) {
                    *a |= b;
                }
            }
        };
        or(self.by_user.get(user));
        for g in groups {
            or(self.by_group.get(g.as_str()));
        }
        for (a, b) in subjects.iter_mut().zip(by_resource) {
            *a &= b;
        }
        debug_assert_eq!(subjects.len(), self.words);
        subjects
    }
}

/// The content version of policy `text`.
pub fn version_of(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn yaml_error(err: serde_saphyr::Error) -> PolicyError {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    // The rendered form repeats the source snippet; the first line is the message.
    let text = err.to_string();
    let message = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid YAML")
        .trim_start_matches("error: ");
    // Drop the parser's own "line N column M: " prefix: the issue carries the location.
    let message = match message.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") && head.contains(" column ") => rest,
        _ => message,
    }
    .to_string();
    PolicyError::one(line, column, message)
}

fn at(loc: &Location, message: impl Into<String>) -> Issue {
    Issue {
        line: loc.line(),
        column: loc.column(),
        message: message.into(),
    }
}

fn check_header(file: &PolicyFile, issues: &mut Vec<Issue>) {
    if file.api_version.value != API_VERSION {
        issues.push(at(
            &file.api_version.referenced,
            format!(
                "apiVersion must be {API_VERSION:?}, got {:?}",
                file.api_version.value
            ),
        ));
    }
    if file.kind.value != KIND {
        issues.push(at(
            &file.kind.referenced,
            format!("kind must be {KIND:?}, got {:?}", file.kind.value),
        ));
    }
}

fn compile_rule(
    spec: &Spanned<RuleSpec>,
    names: &mut HashSet<String>,
    issues: &mut Vec<Issue>,
) -> Option<Rule> {
    let rule_loc = &spec.referenced;
    let spec = &spec.value;
    let before = issues.len();
    let name = spec.name.value.trim().to_string();
    if name.is_empty() {
        issues.push(at(&spec.name.referenced, "rule name must not be empty"));
    } else if !names.insert(name.clone()) {
        issues.push(at(
            &spec.name.referenced,
            format!("duplicate rule name {name:?}"),
        ));
    }
    let subjects = &spec.subjects.value;
    if subjects.users.is_empty() && subjects.groups.is_empty() {
        issues.push(at(
            &spec.subjects.referenced,
            format!(
                "rule {name:?}: subjects needs at least one user or group (users: [\"*\"] for everyone)"
            ),
        ));
    }
    let action = match spec.action.value.as_str() {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        "require_approval" => Action::RequireApproval,
        other => {
            issues.push(at(
                &spec.action.referenced,
                format!(
                    "rule {name:?}: action must be allow, deny or require_approval, got {other:?}"
                ),
            ));
            Action::Deny
        }
    };
    let approval = match (&spec.approval, action) {
        (Some(raw), Action::RequireApproval) => compile_approval(&name, raw, issues),
        (Some(raw), _) => {
            issues.push(at(
                &raw.referenced,
                format!("rule {name:?}: approval settings need action: require_approval"),
            ));
            None
        }
        (None, Action::RequireApproval) => {
            issues.push(at(
                &spec.action.referenced,
                format!(
                    "rule {name:?}: require_approval needs approval.approvers (the groups that may approve)"
                ),
            ));
            None
        }
        (None, _) => None,
    };
    if spec.mask.as_deref().is_some_and(|m| m.trim().is_empty()) {
        issues.push(at(
            rule_loc,
            format!("rule {name:?}: mask must name a profile"),
        ));
    }
    let default_match = model::MatchSpec::default();
    let (m, m_loc) = match &spec.matches {
        Some(m) => (&m.value, &m.referenced),
        None => (&default_match, rule_loc),
    };
    if let Some(verbs) = &m.verbs {
        for verb in &verbs.value {
            if !KNOWN_VERBS.contains(&verb.as_str()) {
                issues.push(at(
                    &verbs.referenced,
                    format!("rule {name:?}: unknown verb {verb:?}"),
                ));
            }
        }
    }
    let non_resource = m.non_resource_urls.is_some();
    let resource_fields = m.api_groups.is_some()
        || m.resources.is_some()
        || m.subresources.is_some()
        || m.namespaces.is_some()
        || m.names.is_some()
        || m.namespace_selector.is_some()
        || m.commands.is_some()
        || m.dry_run.is_some();
    if non_resource && resource_fields {
        issues.push(at(
            m_loc,
            format!(
                "rule {name:?}: nonResourceURLs cannot be combined with resource fields \
                 (write two rules)"
            ),
        ));
    }
    for (field, list) in [
        ("apiGroups", &m.api_groups),
        ("resources", &m.resources),
        ("namespaces", &m.namespaces),
        ("names", &m.names),
        ("commands", &m.commands),
        ("nonResourceURLs", &m.non_resource_urls),
    ] {
        if list.as_ref().is_some_and(Vec::is_empty) {
            issues.push(at(
                m_loc,
                format!(
                    "rule {name:?}: {field} is empty and would match nothing; omit it to match all"
                ),
            ));
        }
    }
    if let Some(ns) = &m.namespaces
        && ns.iter().any(String::is_empty)
    {
        issues.push(at(
            m_loc,
            format!("rule {name:?}: an empty namespace matches nothing (cluster-scoped requests have no namespace)"),
        ));
    }
    if issues.len() > before {
        return None;
    }
    let set = |v: &Option<Vec<String>>| v.as_deref().map(GlobSet::new);
    Some(Rule {
        name,
        line: rule_loc.line(),
        action,
        options: RuleOptions {
            mask: spec.mask.clone(),
            record: spec.record,
            trace: spec.trace,
            reason: spec.reason.clone(),
            approval,
        },
        users: GlobSet::new(&subjects.users),
        groups: GlobSet::new(&subjects.groups),
        verbs: m.verbs.as_ref().map(|v| GlobSet::new(&v.value)),
        api_groups: set(&m.api_groups),
        resources: set(&m.resources),
        subresources: m
            .subresources
            .as_deref()
            .map(GlobSet::new)
            .unwrap_or_else(|| {
                // A command pattern is about exec; otherwise the main resource only.
                let default = if m.commands.is_some() { "exec" } else { "" };
                GlobSet(vec![Glob::Exact(default.to_string())])
            }),
        namespaces: set(&m.namespaces),
        names: set(&m.names),
        namespace_labels: m
            .namespace_selector
            .as_ref()
            .map(|s| s.match_labels.clone()),
        commands: set(&m.commands),
        dry_run: m.dry_run,
        non_resource_urls: set(&m.non_resource_urls),
    })
}

fn compile_approval(
    name: &str,
    raw: &Spanned<model::ApprovalSpecRaw>,
    issues: &mut Vec<Issue>,
) -> Option<ApprovalSpec> {
    let loc = &raw.referenced;
    let raw = &raw.value;
    let before = issues.len();
    if raw.approvers.is_empty() || raw.approvers.iter().any(|g| g.trim().is_empty()) {
        issues.push(at(
            loc,
            format!("rule {name:?}: approval.approvers must list at least one group"),
        ));
    }
    let min_approvals = raw.min_approvals.unwrap_or(1);
    if min_approvals == 0 {
        issues.push(at(
            loc,
            format!("rule {name:?}: approval.minApprovals must be at least 1"),
        ));
    }
    let mode = match raw.mode.as_deref().unwrap_or("hold") {
        "hold" => ApprovalMode::Hold,
        "grant" => ApprovalMode::Grant,
        other => {
            issues.push(at(
                loc,
                format!("rule {name:?}: approval.mode must be hold or grant, got {other:?}"),
            ));
            ApprovalMode::Hold
        }
    };
    let mut duration = |field: &str, value: &Option<String>, default: Duration| match value {
        None => default,
        Some(text) => match parse_duration(text) {
            Some(d) if !d.is_zero() => d,
            _ => {
                issues.push(at(
                    loc,
                    format!(
                        "rule {name:?}: approval.{field} {text:?} is not a duration (e.g. 30s, 15m, 1h)"
                    ),
                ));
                default
            }
        },
    };
    let grant_ttl = duration("grantTtl", &raw.grant_ttl, Duration::from_secs(15 * 60));
    let hold_timeout = duration("holdTimeout", &raw.hold_timeout, Duration::from_secs(300));
    if issues.len() > before {
        return None;
    }
    Some(ApprovalSpec {
        approvers: raw.approvers.clone(),
        min_approvals,
        mode,
        grant_ttl,
        hold_timeout,
        justification_required: raw.justification,
    })
}

/// `30s`, `15m`, `1h`, `500ms`.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}
