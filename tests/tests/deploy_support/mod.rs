//! Shared parts of `deploy_manifests`: rendering and reading the manifests, JSON lookups on
//! the objects, and the binaries' `--help`.
//!
//! # Layout
//! - this file: paths, YAML reading, `kubectl kustomize`, object lookups, [`Help`].
//! - `chart`: the Helm chart's values and templates, read as text.
//! - `docker`: Dockerfile instructions and their checks.

pub mod chart;
pub mod docker;

use anyhow::{Context, Result, ensure};
use gatehouse_tests::harness::stack::find_bin_dir;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kubectl with `kustomize` built in (1.32 on the build machines).
pub const KUBECTL: &str = "/usr/bin/kubectl";

/// The kustomize trees, relative to `deploy/kustomize`.
pub const TREES: &[&str] = &["base", "overlays/eks", "overlays/dev"];

/// The namespace every namespaced object lands in.
pub const NAMESPACE: &str = "gatehouse";

/// Labels only Helm adds; everything else must be equal between chart and kustomize.
pub const HELM_ONLY_LABELS: &[&str] = &["app.kubernetes.io/managed-by", "helm.sh/chart"];

/// Capabilities the agent's eBPF probes need, and nothing more.
pub const AGENT_CAPABILITIES: &[&str] = &["BPF", "PERFMON", "SYS_RESOURCE"];

/// Host paths the agent may mount: the spool and the kernel interfaces the probes read.
pub const AGENT_HOST_PATHS: &[&str] = &[
    "/var/lib/gatehouse/spool",
    "/sys/fs/cgroup",
    "/sys/kernel/tracing",
    "/sys/kernel/btf",
];

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub fn read(rel: &str) -> Result<String> {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Every non-empty document of a multi-document YAML text, as JSON values.
pub fn parse_yaml(text: &str, what: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).with_context(|| format!("parsing {what}"))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// `kubectl kustomize deploy/kustomize/<tree>`, or `None` (with a loud SKIP) without kubectl.
pub fn kustomize(tree: &str) -> Result<Option<Vec<Value>>> {
    if !Path::new(KUBECTL).is_file() {
        eprintln!("SKIP: {KUBECTL} not found: cannot render deploy/kustomize/{tree}");
        return Ok(None);
    }
    let dir = repo().join("deploy/kustomize").join(tree);
    let out = Command::new(KUBECTL)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .context("running kubectl kustomize")?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).context("kustomize output is not UTF-8")?;
    parse_yaml(&text, &format!("the rendering of {tree}")).map(Some)
}

/// The Helm chart rendered with its defaults (`deploy/helm/rendered/gatehouse.yaml`).
pub fn helm_rendering() -> Result<Vec<Value>> {
    parse_yaml(
        &read("deploy/helm/rendered/gatehouse.yaml")?,
        "deploy/helm/rendered/gatehouse.yaml",
    )
}

pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

pub fn kind(v: &Value) -> &str {
    str_at(v, "/kind")
}

pub fn name(v: &Value) -> &str {
    str_at(v, "/metadata/name")
}

pub fn find<'a>(objects: &'a [Value], kind_: &str, name_: &str) -> Result<&'a Value> {
    objects
        .iter()
        .find(|o| kind(o) == kind_ && name(o) == name_)
        .with_context(|| format!("no {kind_} {name_}"))
}

pub fn array<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub fn strings(v: &Value, pointer: &str) -> BTreeSet<String> {
    array(v, pointer)
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// The only container of a workload's pod template.
pub fn container(workload: &Value) -> Result<&Value> {
    let containers = array(workload, "/spec/template/spec/containers");
    ensure!(
        containers.len() == 1,
        "{} {} has {} containers, expected 1",
        kind(workload),
        name(workload),
        containers.len()
    );
    Ok(&containers[0])
}

/// The value of `--flag=value` among a container's args.
pub fn arg<'a>(container: &'a Value, flag: &str) -> Option<&'a str> {
    let prefix = format!("{flag}=");
    array(container, "/args")
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(prefix.as_str()))
}

/// The port number of `host:port`.
pub fn port_of(addr: &str) -> Option<u64> {
    addr.rsplit(':').next()?.parse().ok()
}

pub fn container_port(container: &Value, port_name: &str) -> Option<u64> {
    array(container, "/ports")
        .iter()
        .find(|p| str_at(p, "/name") == port_name)
        .and_then(|p| p.pointer("/containerPort"))
        .and_then(Value::as_u64)
}

/// Flags (`--name`) and environment variables (`[env: NAME=]`) a binary's `--help` lists.
#[derive(Debug, Default)]
pub struct Help {
    /// The binary, to parse argument values with.
    pub binary: PathBuf,
    /// `--flag` names.
    pub flags: BTreeSet<String>,
    /// Environment variables it reads.
    pub env: BTreeSet<String>,
}

impl Help {
    pub fn of(binary: &Path) -> Result<Self> {
        let out = Command::new(binary)
            .arg("--help")
            .output()
            .with_context(|| format!("running {} --help", binary.display()))?;
        ensure!(out.status.success(), "{} --help failed", binary.display());
        let text = String::from_utf8_lossy(&out.stdout);
        let mut help = Help {
            binary: binary.to_path_buf(),
            ..Help::default()
        };
        for line in text.lines() {
            let line = line.trim_start();
            if let Some(rest) = line.strip_prefix("--") {
                let flag: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                help.flags.insert(format!("--{flag}"));
            } else if let Some(short) = line.strip_prefix('-')
                && let Some((_, long)) = short.split_once(", --")
            {
                let flag: String = long
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                help.flags.insert(format!("--{flag}"));
            }
            if let Some(rest) = line.strip_prefix("[env: ") {
                let var: String = rest.chars().take_while(|c| *c != '=').collect();
                help.env.insert(var);
            }
        }
        // Variables the prose names (e.g. a password read only from the environment).
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("GATEHOUSE_") {
                help.env.insert(word.to_string());
            }
        }
        ensure!(
            help.flags.len() > 5,
            "{} --help lists almost no flags",
            binary.display()
        );
        Ok(help)
    }

    /// Parses `args` with the binary itself, twice. With a trailing `--help`, clap checks
    /// every value and then exits 0. Without it, clap also checks the relations between
    /// flags (`requires`, `conflicts_with`: a usage error exits 2); the run is made
    /// harmless first: absolute paths move under a scratch directory that does not exist
    /// (so the binary stops at the first file it needs), listen addresses become
    /// `127.0.0.1:0`, and the environment is empty (no in-cluster variables).
    pub fn check_values(&self, name: &str, args: &[String], errors: &mut Vec<String>) {
        let out = Command::new(&self.binary)
            .args(args)
            .arg("--help")
            .env_clear()
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => errors.push(format!(
                "{name} refuses these arguments: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            )),
            Err(e) => errors.push(format!("{name}: cannot run: {e}")),
        }
        if let Err(e) = self.check_usage(name, args, errors) {
            errors.push(format!("{name}: cannot run: {e:#}"));
        }
    }

    fn check_usage(&self, name: &str, args: &[String], errors: &mut Vec<String>) -> Result<()> {
        let scratch = tempfile::tempdir()?;
        let nowhere = scratch.path().join("absent");
        let args: Vec<String> = args
            .iter()
            .map(|a| match a.split_once('=') {
                Some((flag, value)) if value.starts_with('/') => {
                    format!("{flag}={}{value}", nowhere.display())
                }
                Some((flag, value)) if value.starts_with("0.0.0.0:") => {
                    format!("{flag}=127.0.0.1:0")
                }
                _ => a.clone(),
            })
            .collect();
        let mut child = Command::new(&self.binary)
            .args(&args)
            .env_clear()
            .env("HOME", scratch.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        // Not a timing assertion: a binary that got past its arguments and is still running
        // (found every file it needed) is killed; only exit code 2 (usage) counts.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        if status.and_then(|s| s.code()) == Some(2) {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
            }
            errors.push(format!(
                "{name}: usage error: {}",
                stderr.lines().next().unwrap_or("")
            ));
        }
        Ok(())
    }

    /// Checks one container's args and `GATEHOUSE_*`/`NODE_NAME` variables.
    pub fn check(&self, binary: &str, args: &[String], env: &[String], errors: &mut Vec<String>) {
        for a in args {
            let Some(flag) = a.split('=').next().filter(|f| f.starts_with("--")) else {
                errors.push(format!("{binary}: argument {a:?} is not a --flag"));
                continue;
            };
            if !self.flags.contains(flag) {
                errors.push(format!("{binary}: {flag} is not in `{binary} --help`"));
            }
        }
        for var in env {
            if (var.starts_with("GATEHOUSE_") || var == "NODE_NAME") && !self.env.contains(var) {
                errors.push(format!("{binary}: env {var} is not in `{binary} --help`"));
            }
        }
    }
}

/// `--help` of the agent and the collector, by binary name.
pub fn helps() -> Result<BTreeMap<&'static str, Help>> {
    let dir = find_bin_dir()?;
    let mut map = BTreeMap::new();
    for bin in ["gatehouse-agent", "gatehouse-collector"] {
        map.insert(bin, Help::of(&dir.join(bin))?);
    }
    Ok(map)
}

/// Which Gatehouse binary an image runs, if any.
pub fn binary_of_image(image: &str) -> Option<&'static str> {
    if image.contains("gatehouse-agent") {
        Some("gatehouse-agent")
    } else if image.contains("gatehouse-collector") {
        Some("gatehouse-collector")
    } else {
        None
    }
}

/// Every Gatehouse container's args and env names in these objects checked against `--help`.
pub fn check_object_flags(
    objects: &[Value],
    helps: &BTreeMap<&str, Help>,
    what: &str,
    errors: &mut Vec<String>,
) -> usize {
    let mut checked = 0;
    for object in objects {
        for c in array(object, "/spec/template/spec/containers") {
            let Some(binary) = binary_of_image(str_at(c, "/image")) else {
                continue;
            };
            let Some(help) = helps.get(binary) else {
                continue;
            };
            let args: Vec<String> = array(c, "/args")
                .iter()
                .map(|a| a.as_str().unwrap_or_default().to_string())
                .collect();
            let env: Vec<String> = array(c, "/env")
                .iter()
                .map(|e| str_at(e, "/name").to_string())
                .collect();
            let mut local = Vec::new();
            help.check(binary, &args, &env, &mut local);
            help.check_values(binary, &args, &mut local);
            errors.extend(local.into_iter().map(|e| format!("{what}: {e}")));
            checked += 1;
        }
    }
    checked
}

/// `(apiGroups, resources, verbs)` of each rule, for comparison.
pub fn rules(role: &Value) -> BTreeSet<(Vec<String>, Vec<String>, Vec<String>)> {
    array(role, "/rules")
        .iter()
        .map(|r| {
            let list = |p| strings(r, p).into_iter().collect::<Vec<_>>();
            (list("/apiGroups"), list("/resources"), list("/verbs"))
        })
        .collect()
}

pub fn set(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}
