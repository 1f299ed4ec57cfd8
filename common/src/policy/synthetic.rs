//! A synthetic policy of N rules for benchmarks (`cargo bench`, `cargo xtask bench policy`):
//! teams with their own resources and namespaces, some globs, some wildcard-resource
//! rules every request must look at, and deny/approval rules mixed in.

use std::fmt::Write;

/// Policy text with `n` rules.
pub fn policy_text(n: usize) -> String {
    let mut text = String::from("apiVersion: gatehouse.dev/v1\nkind: Policy\nrules:\n");
    for i in 0..n {
        let team = i % 50;
        let body = match i % 10 {
            // Wildcard resources: in the any-resource list, seen by every request.
            0 => format!(
                "match: {{verbs: [get, list, watch], namespaces: [\"ns-{}*\"]}}\n    action: allow",
                i % 30
            ),
            1 => format!(
                "match: {{resources: [secrets], namespaces: [ns-{}]}}\n    action: deny\n    reason: no",
                i % 30
            ),
            2 => format!(
                "match: {{resources: [pods], subresources: [exec], namespaces: [ns-{}], commands: [\"*sh*\"]}}\n    action: require_approval\n    approval: {{approvers: [leads]}}",
                i % 30
            ),
            _ => format!(
                "match: {{resources: [res{}], namespaces: [ns-{}], names: [\"web-*\", db]}}\n    action: allow\n    mask: m{}",
                i % 40,
                i % 30,
                i % 5
            ),
        };
        let _ = write!(
            text,
            "  - name: r{i}\n    subjects: {{groups: [team-{team}], users: [\"user-{team}\"]}}\n    {body}\n"
        );
    }
    text
}
