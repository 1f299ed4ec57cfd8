//! `cargo xtask bench mask`: the masking engine's cost. Masks a 5,000-item SecretList
//! (the body as the API server sends it) with the built-in `default` profile, against
//! parsing and re-serialising the same body without masking, in the same run; then the
//! throughput of the streaming text masker over log-like text. Prints a table and one
//! JSON line.

use gatehouse_common::mask::{JsonStreamMasker, Profile, TextMasker};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn secret_list(items: usize) -> Vec<u8> {
    let items: Vec<serde_json::Value> = (0..items)
        .map(|i| {
            serde_json::json!({
                "metadata": {
                    "name": format!("app-credentials-{i}"),
                    "namespace": "prod",
                    "uid": format!("6f1c2b9e-{i:04x}-4a7d-9c1e-0b9f3a2d{i:04x}"),
                    "resourceVersion": format!("{}", 100_000 + i),
                    "creationTimestamp": "2026-11-02T10:15:00Z",
                    "labels": {"app": "api", "team": "payments"},
                    "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
                        "apiVersion": "v1", "time": "2026-11-02T10:15:00Z", "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:data": {".": {}, "f:password": {}, "f:username": {}, "f:api-key": {}}, "f:type": {}}}]
                },
                "type": "Opaque",
                "data": {
                    "username": "cGF5bWVudHMtYXBp",
                    "password": format!("czNjcjN0LXBAc3N3MHJkLXt7aX19LXJhbmRvbS17{i:08}"),
                    "api-key": "QUtJQUlPU0ZPRE5ON0VYQU1QTEUvd0phbHJYVXRuRkVNSS9LN01ERU5HL2JQeFJmaUNZ"
                }
            })
        })
        .collect();
    let list = serde_json::json!({
        "kind": "SecretList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "200000"},
        "items": items
    });
    let mut body = serde_json::to_vec(&list).unwrap_or_default();
    body.push(b'\n');
    body
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .find_map(|a| a.strip_prefix("--rounds=").and_then(|v| v.parse().ok()))
        .unwrap_or(30);
    let text_mib: usize = std::env::args()
        .find_map(|a| a.strip_prefix("--text-mib=").and_then(|v| v.parse().ok()))
        .unwrap_or(64);
    let profile = Arc::new(Profile::builtin_default()?);
    let body = secret_list(5000);

    let mut baseline = Vec::with_capacity(rounds);
    let mut masked = Vec::with_capacity(rounds);
    let mut out_len = 0;
    let mut walk = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        // Baseline: what any JSON rewrite costs — parse, then serialise.
        // (The tree is dropped inside the timing, as the masker drops its own.)
        let t = Instant::now();
        let out = {
            let doc: serde_json::Value = serde_json::from_slice(&body)?;
            let mut out = serde_json::to_vec(&doc)?;
            out.push(b'\n');
            out
        };
        baseline.push(t.elapsed());
        std::hint::black_box(&out);
        drop(out);

        // Masking as the agent does it for a buffered body.
        let t = Instant::now();
        let mut masker = JsonStreamMasker::new(profile.clone(), 64 << 20);
        let mut out = Vec::with_capacity(body.len());
        masker.push(&body, &mut out)?;
        masker.finish(&mut out)?;
        masked.push(t.elapsed());
        out_len = out.len();
        // Where the time goes: the tree walk alone.
        let mut doc: serde_json::Value = serde_json::from_slice(&body)?;
        let t = Instant::now();
        gatehouse_common::mask::json::mask_document(&profile, &mut doc);
        walk.push(t.elapsed());
        anyhow::ensure!(
            !out.windows(12).any(|w| w == b"czNjcjN0LXBA"),
            "a value survived masking"
        );
    }
    let base_p50 = percentile(&mut baseline, 0.5);
    let mask_p50 = percentile(&mut masked, 0.5);
    let mask_p95 = percentile(&mut masked, 0.95);
    let walk_p50 = percentile(&mut walk, 0.5);
    let ratio = mask_p50.as_secs_f64() / base_p50.as_secs_f64();

    // Text: log-like lines with a secret every ~50 lines, in 32 KiB chunks.
    let mut text = Vec::new();
    let mut n = 0usize;
    while text.len() < text_mib << 20 {
        n += 1;
        let line = match n % 50 {
            0 => format!("{n} export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE region=eu-west-1\n"),
            25 => format!("{n} connecting with password=hunter{n} to db.internal:5432\n"),
            _ => format!(
                "2026-12-03T17:00:{:02}.{n:06}Z INFO request handled path=/api/v1/items/{n} status=200 took=3ms\n",
                n % 60
            ),
        };
        text.extend_from_slice(line.as_bytes());
    }
    let mut text_runs = Vec::new();
    for _ in 0..3 {
        let mut masker = TextMasker::default();
        let mut out = Vec::with_capacity(text.len());
        let t = Instant::now();
        for chunk in text.chunks(32 << 10) {
            masker.push(chunk, &mut out);
        }
        masker.finish(&mut out);
        text_runs.push(t.elapsed());
        anyhow::ensure!(
            !out.windows(20).any(|w| w == b"AKIAIOSFODNN7EXAMPLE"),
            "a key survived masking"
        );
    }
    let text_best = percentile(&mut text_runs, 0.0);
    let mb_s = text.len() as f64 / 1e6 / text_best.as_secs_f64();

    println!(
        "masking a 5,000-item SecretList ({:.1} MB in, {:.1} MB out), {rounds} rounds",
        body.len() as f64 / 1e6,
        out_len as f64 / 1e6
    );
    println!(
        "  parse + serialise (baseline) p50  {:8.2} ms",
        ms(base_p50)
    );
    println!(
        "  mask (parse, mask, serialise) p50 {:8.2} ms   p95 {:.2} ms   (target <= 50 ms added)",
        ms(mask_p50),
        ms(mask_p95)
    );
    println!(
        "  mask / baseline                   {:8.2}x   masking proper {:.2} ms",
        ratio,
        ms(mask_p50.saturating_sub(base_p50))
    );
    println!(
        "text masker, {:.0} MB of log lines in 32 KiB chunks: {:.0} MB/s",
        text.len() as f64 / 1e6,
        mb_s
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "mask",
            "secret_list_items": 5000,
            "secret_list_bytes": body.len(),
            "baseline_p50_ms": ms(base_p50),
            "mask_p50_ms": ms(mask_p50),
            "mask_p95_ms": ms(mask_p95),
            "mask_walk_p50_ms": ms(walk_p50),
            "mask_over_baseline": ratio,
            "target_added_ms": 50,
            "text_bytes": text.len(),
            "text_mb_per_s": mb_s,
        })
    );
    Ok(())
}
