//! Policy evaluation cost with N rules (`cargo xtask bench policy` runs it in release):
//! p50/p99/max of single evaluations over a mix of requests, printed as a table and as one
//! JSON line. Each sample times a batch of evaluations and divides, so the clock's own
//! cost (~20 ns) does not dominate.

use gatehouse_common::policy::{Policy, Request, synthetic};
use std::hint::black_box;
use std::time::Instant;

const BATCH: u32 = 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rules = 1000usize;
    let mut samples = 200_000usize;
    for arg in std::env::args().skip(1) {
        if let Some(v) = arg.strip_prefix("--rules=") {
            rules = v.parse()?;
        } else if let Some(v) = arg.strip_prefix("--samples=") {
            samples = v.parse()?;
        } else {
            return Err(format!("unknown argument {arg:?} (--rules=N --samples=N)").into());
        }
    }
    let policy = Policy::parse(&synthetic::policy_text(rules))?;
    let groups: Vec<Vec<String>> = (0..50)
        .map(|t| vec![format!("team-{t}"), "engineers".to_string()])
        .collect();
    let users: Vec<String> = (0..50).map(|t| format!("user-{t}")).collect();
    let resources: Vec<String> = (0..40).map(|r| format!("res{r}")).collect();
    let namespaces: Vec<String> = (0..30).map(|n| format!("ns-{n}")).collect();
    // A fixed mix: team members on their resources, exec with commands, misses.
    let requests: Vec<Request<'_>> = (0..997usize)
        .map(|i| Request {
            user: &users[i % 50],
            groups: &groups[i % 50],
            resource_request: true,
            verb: ["get", "list", "create", "delete"][i % 4],
            resource: if i % 7 == 0 {
                "pods"
            } else {
                &resources[i % 40]
            },
            subresource: if i % 7 == 0 { "exec" } else { "" },
            namespace: &namespaces[i % 30],
            name: if i % 3 == 0 { "db" } else { "web-1" },
            command: (i % 7 == 0).then_some("bash -i"),
            ..Request::default()
        })
        .collect();
    let mut allowed = 0usize;
    for r in &requests {
        if policy.evaluate(r).action == gatehouse_common::policy::Action::Allow {
            allowed += 1;
        }
    }
    let mut ns: Vec<f64> = Vec::with_capacity(samples);
    for s in 0..samples {
        let start = Instant::now();
        for b in 0..BATCH as usize {
            black_box(policy.evaluate(black_box(&requests[(s * 31 + b) % requests.len()])));
        }
        ns.push(start.elapsed().as_nanos() as f64 / f64::from(BATCH));
    }
    ns.sort_by(f64::total_cmp);
    let pct = |p: f64| ns[((ns.len() as f64 - 1.0) * p) as usize];
    let (p50, p99, max) = (pct(0.50), pct(0.99), pct(1.0));
    println!("policy evaluation, {rules} rules, {samples} samples of {BATCH} evaluations");
    println!("  allowed in the request mix: {allowed}/{}", requests.len());
    println!("  p50 {:>8.0} ns", p50);
    println!("  p99 {:>8.0} ns   (target <= 5000 ns)", p99);
    println!("  max {:>8.0} ns", max);
    println!(
        "{{\"rules\":{rules},\"samples\":{samples},\"batch\":{BATCH},\"p50_ns\":{p50:.0},\"p99_ns\":{p99:.0},\"max_ns\":{max:.0},\"target_p99_ns\":5000}}"
    );
    Ok(())
}
