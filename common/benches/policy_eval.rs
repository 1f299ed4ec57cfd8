//! Criterion bench: evaluation cost of one request against a 1,000-rule policy.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_common::policy::{Policy, Request, synthetic};
use std::hint::black_box;

fn evaluate(c: &mut Criterion) {
    let policy = match Policy::parse(&synthetic::policy_text(1000)) {
        Ok(p) => p,
        Err(e) => panic!("bench policy invalid: {e}"),
    };
    let groups = vec!["team-7".to_string(), "engineers".to_string()];
    let req = Request {
        user: "alice",
        groups: &groups,
        resource_request: true,
        verb: "get",
        resource: "res7",
        namespace: "ns-7",
        name: "web-1",
        ..Request::default()
    };
    c.bench_function("policy_evaluate_1000_rules", |b| {
        b.iter(|| black_box(policy.evaluate(black_box(&req))))
    });
    let miss = Request {
        resource: "pods",
        namespace: "prod",
        ..req
    };
    c.bench_function("policy_evaluate_1000_rules_default_deny", |b| {
        b.iter(|| black_box(policy.evaluate(black_box(&miss))))
    });
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
