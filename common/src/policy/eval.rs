//! Evaluation: a [`Request`] against a compiled [`Policy`] gives a [`Decision`] that names
//! its rule. The most restrictive matching rule decides (deny > require_approval > allow;
//! the first in file order among equals); no match is a deny by [`DEFAULT_DENY_RULE`].

use super::compile::{Policy, Rule};
use super::{Action, ApprovalSpec};
use std::collections::BTreeMap;

/// The rule name of the default deny (no rule matched).
pub const DEFAULT_DENY_RULE: &str = "default-deny";

/// What is being asked, by whom. Borrowed, so evaluation allocates nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// Username.
    pub user: &'a str,
    /// Groups.
    pub groups: &'a [String],
    /// `false` for `/version`, `/api`, `/openapi/...`.
    pub resource_request: bool,
    /// The path of a non-resource request.
    pub path: &'a str,
    /// Verb.
    pub verb: &'a str,
    /// API group (`""` = core).
    pub api_group: &'a str,
    /// Plural resource.
    pub resource: &'a str,
    /// Subresource (`""` = none).
    pub subresource: &'a str,
    /// Namespace (`""` = cluster scope).
    pub namespace: &'a str,
    /// Object name (`""` = a collection).
    pub name: &'a str,
    /// Exec `command` parameters joined by spaces; `None` when the request is no exec.
    pub command: Option<&'a str>,
    /// `dryRun` was set.
    pub dry_run: bool,
    /// The namespace's labels, when the evaluator knows them (`None` = unknown).
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
}

/// The outcome of one evaluation, borrowing from the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'p> {
    /// What to do.
    pub action: Action,
    /// The deciding rule's name, or [`DEFAULT_DENY_RULE`].
    pub rule: &'p str,
    /// The deciding rule's reason text.
    pub reason: Option<&'p str>,
    /// Masking profile: the first `mask` among the matching rules, in file order.
    pub mask: Option<&'p str>,
    /// Whether any matching rule asks for recording.
    pub record: bool,
    /// Whether any matching rule asks for eBPF tracing.
    pub trace: bool,
    /// Approval settings of the deciding rule (`require_approval` only).
    pub approval: Option<&'p ApprovalSpec>,
}

impl Decision<'_> {
    /// The message shown to the user for a refused request.
    pub fn message(&self) -> String {
        match (self.action, self.reason) {
            (Action::Allow, _) => format!("allowed by rule {:?}", self.rule),
            (_, Some(reason)) => format!("{reason} (gatehouse rule {:?})", self.rule),
            (Action::Deny, None) if self.rule == DEFAULT_DENY_RULE => {
                "no gatehouse policy rule allows this request (default deny)".to_string()
            }
            (Action::Deny, None) => format!("denied by gatehouse rule {:?}", self.rule),
            (Action::RequireApproval, None) => {
                format!("approval required by gatehouse rule {:?}", self.rule)
            }
        }
    }
}

const DEFAULT_DENY: Decision<'static> = Decision {
    action: Action::Deny,
    rule: DEFAULT_DENY_RULE,
    reason: None,
    mask: None,
    record: false,
    trace: false,
    approval: None,
};

impl Policy {
    /// Decides `req`.
    pub fn evaluate<'p>(&'p self, req: &Request<'_>) -> Decision<'p> {
        let mut best: Option<&Rule> = None;
        let mut mask = None;
        let (mut record, mut trace) = (false, false);
        let mut visit = |rule: &'p Rule| -> bool {
            if !rule.matches(req) {
                return true;
            }
            mask = mask.or(rule.options.mask.as_deref());
            record |= rule.options.record;
            trace |= rule.options.trace;
            if best.is_none_or(|b| rule.action > b.action) {
                best = Some(rule);
            }
            // Nothing outranks a deny, and a denied request has no options to collect.
            rule.action != Action::Deny
        };
        self.for_candidates(req, &mut visit);
        match best {
            None => DEFAULT_DENY,
            Some(rule) => Decision {
                action: rule.action,
                rule: &rule.name,
                reason: rule.options.reason.as_deref(),
                mask,
                record,
                trace,
                approval: rule.options.approval.as_ref(),
            },
        }
    }

    /// Every rule matching `req`, in file order (for `gatehouse policy test`).
    pub fn matching_rules<'p>(&'p self, req: &Request<'_>) -> Vec<&'p Rule> {
        let mut out = Vec::new();
        self.for_candidates(req, &mut |rule| {
            if rule.matches(req) {
                out.push(rule);
            }
            true
        });
        out
    }

    /// Calls `visit` on the indexed candidates of `req` in file order, until it says stop.
    fn for_candidates<'p>(&'p self, req: &Request<'_>, visit: &mut impl FnMut(&'p Rule) -> bool) {
        let bits = self
            .index
            .candidates(req.resource_request, req.resource, req.user, req.groups);
        for (w, word) in bits.iter().enumerate() {
            let mut word = *word;
            while word != 0 {
                let i = w * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                if let Some(rule) = self.rules.get(i)
                    && !visit(rule)
                {
                    return;
                }
            }
        }
    }
}

impl Rule {
    /// Whether this rule matches `req` (subjects and every given attribute).
    pub fn matches(&self, req: &Request<'_>) -> bool {
        let subject = self.users.matches(req.user)
            || (!self.groups.0.is_empty() && req.groups.iter().any(|g| self.groups.matches(g)));
        if !subject {
            return false;
        }
        if let Some(verbs) = &self.verbs
            && !verbs.matches(req.verb)
        {
            return false;
        }
        if !req.resource_request {
            return self
                .non_resource_urls
                .as_ref()
                .is_some_and(|urls| urls.matches(req.path));
        }
        if self.non_resource_urls.is_some() {
            return false;
        }
        let opt = |set: &Option<super::glob::GlobSet>, value: &str| {
            set.as_ref().is_none_or(|s| s.matches(value))
        };
        if !opt(&self.api_groups, req.api_group)
            || !opt(&self.resources, req.resource)
            || !self.subresources.matches(req.subresource)
        {
            return false;
        }
        if let Some(ns) = &self.namespaces
            && (req.namespace.is_empty() || !ns.matches(req.namespace))
        {
            return false;
        }
        if let Some(names) = &self.names
            && (req.name.is_empty() || !names.matches(req.name))
        {
            return false;
        }
        if let Some(dry_run) = self.dry_run
            && dry_run != req.dry_run
        {
            return false;
        }
        if let Some(commands) = &self.commands {
            match req.command {
                Some(command) if commands.matches(command) => {}
                _ => return false,
            }
        }
        if let Some(wanted) = &self.namespace_labels {
            match req.namespace_labels {
                Some(labels) => {
                    if req.namespace.is_empty()
                        || !wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
                    {
                        return false;
                    }
                }
                // Unknown labels: a rule that would grant does not match, a rule that
                // restricts does (fail closed).
                None => return self.action != Action::Allow,
            }
        }
        true
    }
}
