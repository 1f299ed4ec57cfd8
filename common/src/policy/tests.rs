//! Unit tests of the policy engine: matching, precedence, globs, validation.

use super::*;
use std::collections::BTreeMap;

const POLICY: &str = r#"apiVersion: gatehouse.dev/v1
kind: Policy
metadata:
  name: unit
rules:
  - name: discovery
    subjects: {users: ["*"]}
    match:
      nonResourceURLs: ["/version", "/api", "/api/*", "/apis", "/apis/*"]
    action: allow
  - name: engineers-read
    subjects: {groups: [engineers]}
    match:
      verbs: [get, list, watch]
      subresources: ["", log]
    action: allow
  - name: secrets-masked
    subjects: {users: ["*"]}
    match:
      resources: [secrets]
    action: allow
    mask: secrets
  - name: engineers-dev
    subjects: {groups: [engineers]}
    match:
      namespaces: [dev, "dev-*"]
      subresources: ["*"]
    action: allow
    record: true
  - name: prod-exec
    subjects: {groups: [engineers]}
    match:
      resources: [pods]
      subresources: [exec, attach, portforward]
      namespaces: [prod]
    action: require_approval
    reason: exec in prod needs an SRE lead
    approval:
      approvers: [sre-leads]
      mode: grant
      grantTtl: 10m
  - name: no-shells-anywhere
    subjects: {users: [mallory]}
    match:
      commands: ["*sh*"]
    action: deny
    reason: no shells for mallory
  - name: kube-system-secrets
    subjects: {groups: [engineers]}
    match:
      resources: [secrets]
      namespaces: [kube-system]
    action: deny
    reason: kube-system secrets are off limits
  - name: pci-namespaces
    subjects: {groups: [engineers]}
    match:
      namespaces: ["pay*"]
      namespaceSelector: {matchLabels: {pci: "true"}}
    action: deny
    reason: PCI namespaces
  - name: labelled-allow
    subjects: {groups: [contractors]}
    match:
      namespaceSelector: {matchLabels: {team: contractors}}
    action: allow
  - name: dry-runs
    subjects: {groups: [interns]}
    match:
      verbs: [create, update, patch]
      dryRun: true
    action: allow
"#;

fn policy() -> Policy {
    match Policy::parse(POLICY) {
        Ok(p) => p,
        Err(e) => panic!("test policy invalid: {e}"),
    }
}

fn req<'a>(user: &'a str, groups: &'a [String], verb: &'a str, resource: &'a str) -> Request<'a> {
    Request {
        user,
        groups,
        resource_request: true,
        verb,
        resource,
        ..Request::default()
    }
}

fn groups(g: &[&str]) -> Vec<String> {
    g.iter().map(|s| s.to_string()).collect()
}

#[test]
fn read_allowed_everywhere_and_names_its_rule() {
    let p = policy();
    let eng = groups(&["engineers"]);
    let d = p.evaluate(&Request {
        namespace: "prod",
        ..req("alice", &eng, "list", "pods")
    });
    assert_eq!((d.action, d.rule), (Action::Allow, "engineers-read"));
    assert!(!d.record);
}

#[test]
fn default_deny_when_nothing_matches() {
    let p = policy();
    let none = groups(&[]);
    let d = p.evaluate(&Request {
        namespace: "prod",
        ..req("eve", &none, "delete", "pods")
    });
    assert_eq!((d.action, d.rule), (Action::Deny, DEFAULT_DENY_RULE));
    assert!(d.message().contains("default deny"));
}

#[test]
fn subresources_must_be_named_like_rbac() {
    let p = policy();
    let eng = groups(&["engineers"]);
    // engineers-read lists "" and log: exec in staging is not covered by it.
    let exec = Request {
        namespace: "staging",
        subresource: "exec",
        command: Some("sh"),
        ..req("alice", &eng, "create", "pods")
    };
    assert_eq!(p.evaluate(&exec).rule, DEFAULT_DENY_RULE);
    let log = Request {
        subresource: "log",
        namespace: "staging",
        ..req("alice", &eng, "get", "pods")
    };
    assert_eq!(p.evaluate(&log).action, Action::Allow);
}

#[test]
fn most_restrictive_wins_and_options_combine() {
    let p = policy();
    let eng = groups(&["engineers"]);
    // Dev: allowed, recorded by engineers-dev; secrets masked by a later rule.
    let d = p.evaluate(&Request {
        namespace: "dev-team",
        ..req("alice", &eng, "get", "secrets")
    });
    assert_eq!((d.action, d.rule), (Action::Allow, "engineers-read"));
    assert_eq!(d.mask, Some("secrets"));
    assert!(d.record, "record comes from engineers-dev");
    // Prod exec: require_approval beats engineers-read (which does not match) and
    // engineers-dev (wrong namespace).
    let d = p.evaluate(&Request {
        namespace: "prod",
        subresource: "exec",
        command: Some("sh -c id"),
        ..req("alice", &eng, "create", "pods")
    });
    assert_eq!((d.action, d.rule), (Action::RequireApproval, "prod-exec"));
    let approval = d
        .approval
        .map(|a| (a.approvers.clone(), a.mode, a.grant_ttl));
    assert_eq!(
        approval,
        Some((
            vec!["sre-leads".to_string()],
            ApprovalMode::Grant,
            std::time::Duration::from_secs(600)
        ))
    );
    assert!(d.message().contains("exec in prod needs an SRE lead"));
    // Deny beats allow: kube-system secrets.
    let d = p.evaluate(&Request {
        namespace: "kube-system",
        name: "token",
        ..req("alice", &eng, "get", "secrets")
    });
    assert_eq!((d.action, d.rule), (Action::Deny, "kube-system-secrets"));
}

#[test]
fn exec_command_patterns() {
    let p = policy();
    let g = groups(&["engineers"]);
    let exec = |cmd| Request {
        namespace: "dev",
        subresource: "exec",
        command: Some(cmd),
        ..req("mallory", &g, "create", "pods")
    };
    assert_eq!(p.evaluate(&exec("bash -i")).rule, "no-shells-anywhere");
    assert_eq!(p.evaluate(&exec("ls /")).rule, "engineers-dev");
}

#[test]
fn unknown_labels_only_restrict() {
    let p = policy();
    let eng = groups(&["engineers"]);
    let contractors = groups(&["contractors"]);
    let pci: BTreeMap<String, String> = [("pci".to_string(), "true".to_string())].into();
    let team: BTreeMap<String, String> = [("team".to_string(), "contractors".to_string())].into();
    let base = Request {
        namespace: "payments",
        ..req("alice", &eng, "get", "pods")
    };
    // Unknown labels: the deny rule with a selector matches (fail closed)...
    assert_eq!(p.evaluate(&base).rule, "pci-namespaces");
    // ...known labels without pci=true: it does not.
    let other = BTreeMap::new();
    let known = Request {
        namespace_labels: Some(&other),
        ..base
    };
    assert_eq!(p.evaluate(&known).rule, "engineers-read");
    let labelled = Request {
        namespace_labels: Some(&pci),
        ..base
    };
    assert_eq!(p.evaluate(&labelled).rule, "pci-namespaces");
    // An allow rule with a selector never matches unknown labels.
    let c = Request {
        namespace: "vendor",
        ..req("carl", &contractors, "get", "pods")
    };
    assert_eq!(p.evaluate(&c).rule, DEFAULT_DENY_RULE);
    let c_known = Request {
        namespace_labels: Some(&team),
        ..c
    };
    assert_eq!(p.evaluate(&c_known).rule, "labelled-allow");
}

#[test]
fn dry_run_and_non_resource() {
    let p = policy();
    let interns = groups(&["interns"]);
    let create = req("ivan", &interns, "create", "deployments");
    assert_eq!(p.evaluate(&create).action, Action::Deny);
    let dry = Request {
        dry_run: true,
        ..create
    };
    assert_eq!(p.evaluate(&dry).rule, "dry-runs");
    let version = Request {
        resource_request: false,
        path: "/version",
        verb: "get",
        ..Request::default()
    };
    assert_eq!(
        p.evaluate(&Request {
            user: "x",
            ..version
        })
        .rule,
        "discovery"
    );
    let metrics = Request {
        user: "x",
        path: "/metrics",
        ..version
    };
    assert_eq!(p.evaluate(&metrics).rule, DEFAULT_DENY_RULE);
}

#[test]
fn namespace_and_name_lists_skip_cluster_scope_and_collections() {
    let p = Policy::parse(
        r#"apiVersion: gatehouse.dev/v1
kind: Policy
rules:
  - name: web-only
    subjects: {users: [u]}
    match: {names: ["web-*"]}
    action: allow
  - name: any-ns
    subjects: {users: [v]}
    match: {namespaces: ["*"]}
    action: allow
"#,
    );
    let p = match p {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let none = groups(&[]);
    assert_eq!(
        p.evaluate(&req("u", &none, "list", "pods")).action,
        Action::Deny
    );
    let named = Request {
        name: "web-1",
        ..req("u", &none, "get", "pods")
    };
    assert_eq!(p.evaluate(&named).rule, "web-only");
    assert_eq!(
        p.evaluate(&req("v", &none, "list", "nodes")).action,
        Action::Deny
    );
    let ns = Request {
        namespace: "a",
        ..req("v", &none, "list", "pods")
    };
    assert_eq!(p.evaluate(&ns).rule, "any-ns");
}

#[test]
fn file_order_breaks_ties_and_explain_lists_all() {
    let p = policy();
    let eng = groups(&["engineers"]);
    let r = Request {
        namespace: "dev",
        ..req("alice", &eng, "get", "secrets")
    };
    let names: Vec<&str> = p
        .matching_rules(&r)
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["engineers-read", "secrets-masked", "engineers-dev"]);
}

fn issues(text: &str) -> Vec<Issue> {
    match Policy::parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.issues,
    }
}

#[test]
fn validation_errors_carry_lines() {
    let header = "apiVersion: gatehouse.dev/v1\nkind: Policy\nrules:\n";
    // Unknown field on line 6.
    let text = format!(
        "{header}  - name: a\n    subjects: {{users: [x]}}\n    verb: [get]\n    action: allow\n"
    );
    let i = issues(&text);
    assert_eq!(i[0].line, 6, "{i:?}");
    assert!(i[0].message.contains("verb"), "{i:?}");
    // Bad action on line 6, unknown verb on line 11, duplicate name on line 9.
    let text = format!(
        "{header}  - name: a\n    subjects: {{users: [x]}}\n    action: permit\n  - name: b\n    subjects: {{users: [x]}}\n    match:\n      verbs: [delet]\n    action: allow\n  - name: b\n    subjects: {{groups: [g]}}\n    action: deny\n"
    );
    let i = issues(&text);
    let lines: Vec<u64> = i.iter().map(|i| i.line).collect();
    assert_eq!(lines, [6, 10, 12], "{i:?}");
    assert!(i[0].message.contains("permit"));
    assert!(i[1].message.contains("delet"));
    assert!(i[2].message.contains("duplicate"));
    // Missing subjects entries, approval without require_approval and vice versa.
    let text = format!(
        "{header}  - name: a\n    subjects: {{}}\n    action: allow\n  - name: b\n    subjects: {{users: [x]}}\n    action: require_approval\n  - name: c\n    subjects: {{users: [x]}}\n    action: allow\n    approval: {{approvers: [g]}}\n"
    );
    let i = issues(&text);
    assert_eq!(i.len(), 3, "{i:?}");
    assert_eq!(i[0].line, 5);
    assert_eq!(i[1].line, 9);
    assert_eq!(i[2].line, 13);
    // Header and syntax errors.
    let i = issues("apiVersion: v1\nkind: Policy\n");
    assert_eq!(i[0].line, 1);
    let i = issues("apiVersion: gatehouse.dev/v1\nkind: Policy\nrules:\n  - name: [unclosed\n");
    assert!(i[0].line >= 4, "{i:?}");
    let err = Policy::parse("apiVersion: gatehouse.dev/v1\nkind: Policy\nrules: 3\n");
    assert!(err.is_err());
}

#[test]
fn version_is_content_derived() {
    let a = policy();
    let b = policy();
    assert_eq!(a.version, b.version);
    assert_eq!(a.version.len(), 16);
    assert_ne!(a.version, version_of("other"));
}

#[test]
fn index_handles_many_rules() {
    use std::fmt::Write;
    let mut text = String::from("apiVersion: gatehouse.dev/v1\nkind: Policy\nrules:\n");
    for i in 0..1000 {
        let _ = write!(
            text,
            "  - name: r{i}\n    subjects: {{groups: [team-{}]}}\n    match: {{resources: [res{}], namespaces: [ns-{}]}}\n    action: allow\n",
            i % 50,
            i % 40,
            i % 30
        );
    }
    let p = match Policy::parse(&text) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let g = groups(&["team-7"]);
    let r = Request {
        namespace: "ns-7",
        ..req("x", &g, "get", "res7")
    };
    let d = p.evaluate(&r);
    assert_eq!((d.action, d.rule), (Action::Allow, "r7"));
    // Same answer as a linear scan over every rule.
    let linear = p
        .rules()
        .iter()
        .find(|rule| rule.matches(&r))
        .map(|r| &r.name);
    assert_eq!(linear.map(String::as_str), Some("r7"));
}
