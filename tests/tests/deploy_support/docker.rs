//! Dockerfiles read statically (no docker daemon on the build machines): stages, COPY
//! sources, cargo and xtask invocations against the workspace.

use super::{read, repo, str_at, strings};
use anyhow::{Context, Result, bail};
use gatehouse_tests::harness::stack::find_bin_dir;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug)]
pub struct Instruction {
    pub op: String,
    pub args: String,
}

pub fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') && pending.is_empty() || t.is_empty() {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(t);
        let full = std::mem::take(&mut pending);
        let (op, args) = full.split_once(' ').unwrap_or((full.as_str(), ""));
        out.push(Instruction {
            op: op.to_uppercase(),
            args: args.trim().to_string(),
        });
    }
    out
}

/// Workspace package name -> its binaries (from each member's Cargo.toml).
pub fn workspace_binaries() -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut map = BTreeMap::new();
    for member in ["common", "agent", "collector", "xtask", "tests"] {
        let manifest: Value = toml_like_names(&read(&format!("{member}/Cargo.toml"))?);
        let name = str_at(&manifest, "/package").to_string();
        let bins = strings(&manifest, "/bins");
        map.insert(name, bins);
    }
    Ok(map)
}

/// The package name and `[[bin]]` names of a Cargo.toml (a two-field reading is all this needs).
pub fn toml_like_names(text: &str) -> Value {
    let mut section = "";
    let mut package = String::new();
    let mut bins = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = if t == "[package]" {
                "package"
            } else if t == "[[bin]]" {
                "bin"
            } else {
                ""
            };
            continue;
        }
        if let Some(v) = t.strip_prefix("name = ") {
            let v = v.trim_matches('"').to_string();
            match section {
                "package" => package = v,
                "bin" => bins.push(Value::String(v)),
                _ => {}
            }
        }
    }
    serde_json::json!({ "package": package, "bins": bins })
}

/// Value of `-p X` / `--bin X` style options in a command line.
pub fn option_values<'a>(command: &'a str, option: &str) -> Vec<&'a str> {
    let words: Vec<&str> = command.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == option)
        .map(|w| w[1])
        .collect()
}

/// Static checks of one Dockerfile; returns the binaries its last stage runs.
pub fn check_dockerfile(rel: &str, errors: &mut Vec<String>) -> Result<Vec<String>> {
    let text = read(rel)?;
    let packages = workspace_binaries()?;
    let mut stages: Vec<String> = Vec::new();
    // Binaries each stage (and the stages it is built FROM) compiled.
    let mut built: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut copied_into_last: BTreeSet<String> = BTreeSet::new();
    let mut current = String::new();
    let mut entrypoint = Vec::new();
    for ins in instructions(&text) {
        match ins.op.as_str() {
            "FROM" => {
                let words: Vec<&str> = ins.args.split_whitespace().collect();
                let (image, stage) = match words.as_slice() {
                    [image, as_, stage] if as_.eq_ignore_ascii_case("as") => (*image, *stage),
                    _ => {
                        errors.push(format!("{rel}: FROM {} has no `AS name`", ins.args));
                        continue;
                    }
                };
                let inherited = built.get(image).cloned();
                if inherited.is_none() && !image.contains(':') {
                    errors.push(format!(
                        "{rel}: FROM {image} is neither a stage nor a tagged image"
                    ));
                }
                current = stage.to_string();
                stages.push(current.clone());
                built.insert(current.clone(), inherited.unwrap_or_default());
                copied_into_last.clear();
            }
            "RUN" => {
                for part in ins.args.split("&&") {
                    let part = part.trim();
                    if part.contains("cargo build") {
                        for p in option_values(part, "-p") {
                            let Some(bins) = packages.get(p) else {
                                errors.push(format!("{rel}: -p {p} is not a workspace package"));
                                continue;
                            };
                            for b in option_values(part, "--bin") {
                                if !bins.contains(b) {
                                    errors.push(format!("{rel}: --bin {b} is not a binary of {p}"));
                                }
                                built
                                    .entry(current.clone())
                                    .or_default()
                                    .insert(b.to_string());
                            }
                        }
                        if !part.contains("--locked") {
                            errors.push(format!("{rel}: cargo build without --locked"));
                        }
                    }
                    if let Some(rest) = part.split("cargo xtask ").nth(1) {
                        check_xtask(rel, rest, errors)?;
                    }
                }
            }
            "COPY" => {
                let words: Vec<&str> = ins.args.split_whitespace().collect();
                let (from, paths): (Option<&str>, &[&str]) = match words.split_first() {
                    Some((first, rest)) if first.starts_with("--from=") => {
                        (first.strip_prefix("--from="), rest)
                    }
                    _ => (None, words.as_slice()),
                };
                let Some((dest, sources)) = paths.split_last() else {
                    errors.push(format!("{rel}: COPY {} without a destination", ins.args));
                    continue;
                };
                match from {
                    Some(stage) => {
                        let Some(bins) = built.get(stage) else {
                            errors
                                .push(format!("{rel}: COPY --from={stage}: no such earlier stage"));
                            continue;
                        };
                        for src in sources {
                            let bin = src.strip_prefix("/src/target/release/").unwrap_or("");
                            if !bins.contains(bin) {
                                errors.push(format!(
                                    "{rel}: COPY {src}: stage {stage} builds no such binary"
                                ));
                            }
                        }
                        copied_into_last.insert(dest.to_string());
                    }
                    None => {
                        for src in sources {
                            if !repo().join(src).exists() {
                                errors.push(format!(
                                    "{rel}: COPY {src}: no such path in the repository"
                                ));
                            }
                        }
                    }
                }
            }
            "ENTRYPOINT" => {
                entrypoint = serde_json::from_str::<Vec<String>>(&ins.args)
                    .with_context(|| format!("{rel}: ENTRYPOINT is not an exec-form JSON list"))?;
            }
            _ => {}
        }
    }
    let Some(program) = entrypoint.first() else {
        bail!("{rel}: no ENTRYPOINT");
    };
    if !copied_into_last.contains(program) {
        errors.push(format!(
            "{rel}: ENTRYPOINT {program} is not copied into the last stage"
        ));
    }
    let binary = program.rsplit('/').next().unwrap_or_default().to_string();
    Ok(vec![binary])
}

/// `cargo xtask SUB FLAGS...`: the subcommand and its flags exist in the built xtask.
pub fn check_xtask(rel: &str, invocation: &str, errors: &mut Vec<String>) -> Result<()> {
    let words: Vec<&str> = invocation.split_whitespace().collect();
    let Some((sub, flags)) = words.split_first() else {
        errors.push(format!("{rel}: `cargo xtask` without a subcommand"));
        return Ok(());
    };
    let xtask = find_bin_dir()?.join("xtask");
    if !xtask.is_file() {
        eprintln!(
            "SKIP: {} not built: `cargo xtask {sub}` in {rel} not checked (build it with `cargo build -p xtask`)",
            xtask.display()
        );
        return Ok(());
    }
    let out = Command::new(&xtask).args([sub, &"--help"]).output()?;
    if !out.status.success() {
        errors.push(format!(
            "{rel}: `cargo xtask {sub}` is not an xtask subcommand"
        ));
        return Ok(());
    }
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in flags.iter().filter(|f| f.starts_with("--")) {
        if !help.contains(flag) {
            errors.push(format!("{rel}: `cargo xtask {sub}` has no {flag}"));
        }
    }
    Ok(())
}
