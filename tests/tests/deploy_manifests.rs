//! Checks of `deploy/`: the kustomize trees render with the real kubectl, the objects have
//! the security settings and RBAC they must, every flag and `GATEHOUSE_*` variable they pass
//! is one the built binaries' `--help` lists, the Helm chart's checked-in default rendering
//! equals the kustomize base, every chart value is used and documented, and the Dockerfiles
//! and compose file use only real build steps and files of this repository.
//!
//! Needs `/usr/bin/kubectl` (skips loudly without it) and the built binaries
//! (`cargo build -p gatehouse-agent -p gatehouse-collector --bins`).

use anyhow::{Context, Result, bail, ensure};
use gatehouse_tests::harness::stack::find_bin_dir;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kubectl with `kustomize` built in (1.32 on the build machines).
const KUBECTL: &str = "/usr/bin/kubectl";

/// The kustomize trees, relative to `deploy/kustomize`.
const TREES: &[&str] = &["base", "overlays/eks", "overlays/dev"];

/// The namespace every namespaced object lands in.
const NAMESPACE: &str = "gatehouse";

/// Labels only Helm adds; everything else must be equal between chart and kustomize.
const HELM_ONLY_LABELS: &[&str] = &["app.kubernetes.io/managed-by", "helm.sh/chart"];

/// Capabilities the agent's eBPF probes need, and nothing more.
const AGENT_CAPABILITIES: &[&str] = &["BPF", "PERFMON", "SYS_RESOURCE"];

/// Host paths the agent may mount: the spool and the kernel interfaces the probes read.
const AGENT_HOST_PATHS: &[&str] = &[
    "/var/lib/gatehouse/spool",
    "/sys/fs/cgroup",
    "/sys/kernel/tracing",
    "/sys/kernel/btf",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn read(rel: &str) -> Result<String> {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Every non-empty document of a multi-document YAML text, as JSON values.
fn parse_yaml(text: &str, what: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).with_context(|| format!("parsing {what}"))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// `kubectl kustomize deploy/kustomize/<tree>`, or `None` (with a loud SKIP) without kubectl.
fn kustomize(tree: &str) -> Result<Option<Vec<Value>>> {
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
fn helm_rendering() -> Result<Vec<Value>> {
    parse_yaml(
        &read("deploy/helm/rendered/gatehouse.yaml")?,
        "deploy/helm/rendered/gatehouse.yaml",
    )
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn kind(v: &Value) -> &str {
    str_at(v, "/kind")
}

fn name(v: &Value) -> &str {
    str_at(v, "/metadata/name")
}

fn find<'a>(objects: &'a [Value], kind_: &str, name_: &str) -> Result<&'a Value> {
    objects
        .iter()
        .find(|o| kind(o) == kind_ && name(o) == name_)
        .with_context(|| format!("no {kind_} {name_}"))
}

fn array<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn strings(v: &Value, pointer: &str) -> BTreeSet<String> {
    array(v, pointer)
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// The only container of a workload's pod template.
fn container(workload: &Value) -> Result<&Value> {
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
fn arg<'a>(container: &'a Value, flag: &str) -> Option<&'a str> {
    let prefix = format!("{flag}=");
    array(container, "/args")
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(prefix.as_str()))
}

/// The port number of `host:port`.
fn port_of(addr: &str) -> Option<u64> {
    addr.rsplit(':').next()?.parse().ok()
}

fn container_port(container: &Value, port_name: &str) -> Option<u64> {
    array(container, "/ports")
        .iter()
        .find(|p| str_at(p, "/name") == port_name)
        .and_then(|p| p.pointer("/containerPort"))
        .and_then(Value::as_u64)
}

/// Flags (`--name`) and environment variables (`[env: NAME=]`) a binary's `--help` lists.
#[derive(Debug, Default)]
struct Help {
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
}

impl Help {
    fn of(binary: &Path) -> Result<Self> {
        let out = Command::new(binary)
            .arg("--help")
            .output()
            .with_context(|| format!("running {} --help", binary.display()))?;
        ensure!(out.status.success(), "{} --help failed", binary.display());
        let text = String::from_utf8_lossy(&out.stdout);
        let mut help = Help::default();
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

    /// Checks one container's args and `GATEHOUSE_*`/`NODE_NAME` variables.
    fn check(&self, binary: &str, args: &[String], env: &[String], errors: &mut Vec<String>) {
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
fn helps() -> Result<BTreeMap<&'static str, Help>> {
    let dir = find_bin_dir()?;
    let mut map = BTreeMap::new();
    for bin in ["gatehouse-agent", "gatehouse-collector"] {
        map.insert(bin, Help::of(&dir.join(bin))?);
    }
    Ok(map)
}

/// Which Gatehouse binary an image runs, if any.
fn binary_of_image(image: &str) -> Option<&'static str> {
    if image.contains("gatehouse-agent") {
        Some("gatehouse-agent")
    } else if image.contains("gatehouse-collector") {
        Some("gatehouse-collector")
    } else {
        None
    }
}

/// Every Gatehouse container's args and env names in these objects checked against `--help`.
fn check_object_flags(
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
            let args: Vec<String> = strings(c, "/args").into_iter().collect();
            let env: Vec<String> = array(c, "/env")
                .iter()
                .map(|e| str_at(e, "/name").to_string())
                .collect();
            let mut local = Vec::new();
            help.check(binary, &args, &env, &mut local);
            errors.extend(local.into_iter().map(|e| format!("{what}: {e}")));
            checked += 1;
        }
    }
    checked
}

#[test]
fn kustomize_trees_render_the_expected_objects() -> Result<()> {
    let common = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "Certificate",
        "Issuer",
    ];
    for tree in TREES {
        let Some(objects) = kustomize(tree)? else {
            return Ok(());
        };
        let kinds: BTreeSet<&str> = objects.iter().map(kind).collect();
        for k in common {
            ensure!(kinds.contains(k), "{tree}: no {k}");
        }
        for o in &objects {
            ensure!(
                !str_at(o, "/apiVersion").is_empty() && !kind(o).is_empty() && !name(o).is_empty(),
                "{tree}: object without apiVersion/kind/name: {o}"
            );
            let cluster_scoped = matches!(kind(o), "Namespace" | "ClusterRole" | "ClusterRoleBinding");
            ensure!(
                cluster_scoped || str_at(o, "/metadata/namespace") == NAMESPACE,
                "{tree}: {} {} is not in namespace {NAMESPACE}",
                kind(o),
                name(o)
            );
        }
        // Every workload's selector matches its own pod labels, and some Service selects it.
        for w in objects
            .iter()
            .filter(|o| matches!(kind(o), "DaemonSet" | "Deployment" | "StatefulSet"))
        {
            let selector = w
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .with_context(|| format!("{tree}: {} has no selector", name(w)))?;
            let labels = w
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object)
                .with_context(|| format!("{tree}: {} has no pod labels", name(w)))?;
            for (k, v) in selector {
                ensure!(
                    labels.get(k) == Some(v),
                    "{tree}: {} selector {k} does not match its pods",
                    name(w)
                );
            }
            let served = objects.iter().filter(|o| kind(o) == "Service").any(|s| {
                s.pointer("/spec/selector")
                    .and_then(Value::as_object)
                    .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
            });
            ensure!(served, "{tree}: no Service selects {}", name(w));
        }
        // Service target ports name real container ports.
        for s in objects.iter().filter(|o| kind(o) == "Service") {
            let sel = s.pointer("/spec/selector").and_then(Value::as_object);
            let pods: Vec<&Value> = objects
                .iter()
                .filter(|w| {
                    let labels = w.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
                    match (sel, labels) {
                        (Some(sel), Some(labels)) => sel.iter().all(|(k, v)| labels.get(k) == Some(v)),
                        _ => false,
                    }
                })
                .collect();
            for p in array(s, "/spec/ports") {
                let target = str_at(p, "/targetPort");
                let found = pods.iter().any(|w| {
                    array(w, "/spec/template/spec/containers")
                        .iter()
                        .any(|c| container_port(c, target).is_some())
                });
                ensure!(found, "{tree}: Service {} targets unknown port {target:?}", name(s));
            }
        }
    }
    Ok(())
}

#[test]
fn agent_daemonset_has_only_the_privileges_ebpf_needs() -> Result<()> {
    for tree in TREES {
        let Some(objects) = kustomize(tree)? else {
            return Ok(());
        };
        let ds = find(&objects, "DaemonSet", "gatehouse-agent")?;
        let pod = ds.pointer("/spec/template/spec").context("no pod spec")?;
        ensure!(pod.pointer("/hostPID") == Some(&Value::Bool(true)), "{tree}: agent needs hostPID");
        ensure!(
            pod.pointer("/hostNetwork").is_none_or(|v| v == &Value::Bool(false)),
            "{tree}: agent must not use the host network"
        );
        ensure!(
            str_at(pod, "/securityContext/seccompProfile/type") == "RuntimeDefault",
            "{tree}: agent seccomp profile is not RuntimeDefault"
        );
        ensure!(
            array(pod, "/tolerations")
                .iter()
                .any(|t| str_at(t, "/operator") == "Exists" && t.pointer("/key").is_none()),
            "{tree}: agent does not tolerate every taint"
        );
        let c = container(ds)?;
        let sc = c.pointer("/securityContext").context("agent has no securityContext")?;
        ensure!(sc.pointer("/privileged") == Some(&Value::Bool(false)), "{tree}: agent privileged");
        ensure!(
            sc.pointer("/allowPrivilegeEscalation") == Some(&Value::Bool(false)),
            "{tree}: agent allows privilege escalation"
        );
        ensure!(
            sc.pointer("/readOnlyRootFilesystem") == Some(&Value::Bool(true)),
            "{tree}: agent root filesystem is writable"
        );
        ensure!(
            strings(sc, "/capabilities/drop") == BTreeSet::from(["ALL".to_string()]),
            "{tree}: agent does not drop ALL capabilities"
        );
        let added = strings(sc, "/capabilities/add");
        let wanted: BTreeSet<String> = AGENT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        ensure!(added == wanted, "{tree}: agent capabilities {added:?}, expected {wanted:?}");

        // Host paths: only the allowed ones, kernel interfaces read-only.
        let mut host_volumes = BTreeMap::new();
        for v in array(pod, "/volumes") {
            if let Some(path) = v.pointer("/hostPath/path").and_then(Value::as_str) {
                ensure!(AGENT_HOST_PATHS.contains(&path), "{tree}: agent mounts host path {path}");
                host_volumes.insert(str_at(v, "/name").to_string(), path.to_string());
            }
        }
        for m in array(c, "/volumeMounts") {
            let Some(host) = host_volumes.get(str_at(m, "/name")) else {
                continue;
            };
            let read_only = m.pointer("/readOnly") == Some(&Value::Bool(true));
            ensure!(
                read_only || host == "/var/lib/gatehouse/spool",
                "{tree}: agent mounts {host} writable"
            );
        }
        for wanted in AGENT_HOST_PATHS {
            ensure!(
                host_volumes.values().any(|p| p == wanted),
                "{tree}: agent does not mount {wanted}"
            );
        }
        ensure!(
            arg(c, "--spool-dir")
                .is_some_and(|d| array(c, "/volumeMounts").iter().any(|m| str_at(m, "/mountPath") == d)),
            "{tree}: --spool-dir is not a mounted volume"
        );

        // Ports and probes match the flags.
        let listen = arg(c, "--listen").and_then(port_of);
        ensure!(
            listen.is_some() && listen == container_port(c, "https"),
            "{tree}: agent --listen port is not the https container port"
        );
        let ops = arg(c, "--ops-listen").and_then(port_of);
        ensure!(
            ops.is_some() && ops == container_port(c, "ops"),
            "{tree}: agent --ops-listen port is not the ops container port"
        );
        ensure!(
            arg(c, "--ops-listen").is_some_and(|a| a.starts_with("0.0.0.0:")),
            "{tree}: kubelet cannot probe an ops port on loopback"
        );
        ensure!(str_at(c, "/readinessProbe/httpGet/path") == "/readyz", "{tree}: agent readiness");
        ensure!(str_at(c, "/livenessProbe/httpGet/path") == "/healthz", "{tree}: agent liveness");
        ensure!(str_at(c, "/readinessProbe/httpGet/port") == "ops", "{tree}: readiness port");
        ensure!(str_at(c, "/livenessProbe/httpGet/port") == "ops", "{tree}: liveness port");
        ensure!(
            array(c, "/env").iter().any(|e| str_at(e, "/name") == "NODE_NAME"
                && str_at(e, "/valueFrom/fieldRef/fieldPath") == "spec.nodeName"),
            "{tree}: agent does not get its node name"
        );
        // The agent reaches the collector at its Service, trusting only the collector's CA.
        let url = arg(c, "--collector-url").unwrap_or("");
        ensure!(
            url == "https://gatehouse-collector.gatehouse.svc:9443",
            "{tree}: --collector-url {url}"
        );
        let ca_volume = array(pod, "/volumes")
            .iter()
            .find(|v| str_at(v, "/name") == "collector-ca")
            .context("no collector-ca volume")?;
        ensure!(
            !array(ca_volume, "/secret/items").is_empty()
                && array(ca_volume, "/secret/items")
                    .iter()
                    .all(|i| str_at(i, "/key") == "ca.crt"),
            "{tree}: the agent must get only ca.crt of the collector's secret"
        );
    }
    Ok(())
}

#[test]
fn collector_runs_as_non_root_with_matching_ports() -> Result<()> {
    for tree in TREES {
        let Some(objects) = kustomize(tree)? else {
            return Ok(());
        };
        let deploy = find(&objects, "Deployment", "gatehouse-collector")?;
        let pod = deploy.pointer("/spec/template/spec").context("no pod spec")?;
        ensure!(
            pod.pointer("/securityContext/runAsNonRoot") == Some(&Value::Bool(true)),
            "{tree}: collector pod may run as root"
        );
        let c = container(deploy)?;
        let sc = c.pointer("/securityContext").context("collector has no securityContext")?;
        for (field, want) in [
            ("/runAsNonRoot", true),
            ("/readOnlyRootFilesystem", true),
            ("/allowPrivilegeEscalation", false),
            ("/privileged", false),
        ] {
            ensure!(
                sc.pointer(field) == Some(&Value::Bool(want)),
                "{tree}: collector securityContext{field} is not {want}"
            );
        }
        ensure!(
            strings(sc, "/capabilities/drop") == BTreeSet::from(["ALL".to_string()])
                && strings(sc, "/capabilities/add").is_empty(),
            "{tree}: collector capabilities"
        );
        for (flag, port) in [("--listen", "http"), ("--ingest-listen", "ingest"), ("--api-listen", "api")] {
            let p = arg(c, flag).and_then(port_of);
            ensure!(
                p.is_some() && p == container_port(c, port),
                "{tree}: collector {flag} is not container port {port}"
            );
        }
        ensure!(str_at(c, "/readinessProbe/httpGet/path") == "/readyz", "{tree}: readiness");
        ensure!(str_at(c, "/livenessProbe/httpGet/path") == "/healthz", "{tree}: liveness");
        ensure!(str_at(c, "/readinessProbe/httpGet/port") == "http", "{tree}: readiness port");
        // The password comes from a Secret, never from an argument.
        ensure!(
            arg(c, "--clickhouse-password").is_none()
                && array(c, "/env").iter().any(|e| str_at(e, "/name") == "GATEHOUSE_CLICKHOUSE_PASSWORD"
                    && e.pointer("/valueFrom/secretKeyRef/key").is_some()),
            "{tree}: the ClickHouse password must come from a Secret"
        );
        // The in-cluster ClickHouse, when present, is what the collector writes to.
        let url = arg(c, "--clickhouse-url").context("no --clickhouse-url")?;
        let in_cluster = find(&objects, "StatefulSet", "gatehouse-clickhouse").is_ok();
        ensure!(
            in_cluster == (url == "http://gatehouse-clickhouse.gatehouse.svc:8123"),
            "{tree}: --clickhouse-url {url} does not match the in-cluster ClickHouse ({in_cluster})"
        );
        if let Ok(pdb) = find(&objects, "PodDisruptionBudget", "gatehouse-collector") {
            ensure!(
                pdb.pointer("/spec/selector/matchLabels") == deploy.pointer("/spec/selector/matchLabels"),
                "{tree}: the PodDisruptionBudget does not select the collector"
            );
        }
    }
    Ok(())
}

/// `(apiGroups, resources, verbs)` of each rule, for comparison.
fn rules(role: &Value) -> BTreeSet<(Vec<String>, Vec<String>, Vec<String>)> {
    array(role, "/rules")
        .iter()
        .map(|r| {
            let list = |p| strings(r, p).into_iter().collect::<Vec<_>>();
            (list("/apiGroups"), list("/resources"), list("/verbs"))
        })
        .collect()
}

fn set(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn rbac_grants_impersonation_and_tokenreview_only() -> Result<()> {
    let standalone = parse_yaml(
        &read("deploy/agent-impersonation-rbac.yaml")?,
        "deploy/agent-impersonation-rbac.yaml",
    )?;
    let standalone_rules = rules(find(&standalone, "ClusterRole", "gatehouse-agent-impersonator")?);
    let impersonation = BTreeSet::from([
        (set(&[""]), set(&["users", "groups", "serviceaccounts"]), set(&["impersonate"])),
        (set(&["authentication.k8s.io"]), set(&["uids", "userextras/*"]), set(&["impersonate"])),
    ]);
    ensure!(
        standalone_rules == impersonation,
        "deploy/agent-impersonation-rbac.yaml rules changed"
    );
    let tokenreview = BTreeSet::from([(
        set(&["authentication.k8s.io"]),
        set(&["tokenreviews"]),
        set(&["create"]),
    )]);
    for tree in TREES {
        let Some(objects) = kustomize(tree)? else {
            return Ok(());
        };
        let roles: Vec<&Value> = objects
            .iter()
            .filter(|o| matches!(kind(o), "ClusterRole" | "Role"))
            .collect();
        ensure!(roles.len() == 2, "{tree}: {} roles, expected 2", roles.len());
        ensure!(
            rules(find(&objects, "ClusterRole", "gatehouse-agent-impersonator")?) == impersonation,
            "{tree}: agent ClusterRole is not exactly impersonation"
        );
        ensure!(
            rules(find(&objects, "ClusterRole", "gatehouse-collector-tokenreview")?) == tokenreview,
            "{tree}: collector ClusterRole is not exactly create tokenreviews"
        );
        for (binding, role, sa) in [
            ("gatehouse-agent-impersonator", "gatehouse-agent-impersonator", "gatehouse-agent"),
            ("gatehouse-collector-tokenreview", "gatehouse-collector-tokenreview", "gatehouse-collector"),
        ] {
            let b = find(&objects, "ClusterRoleBinding", binding)?;
            ensure!(str_at(b, "/roleRef/name") == role, "{tree}: {binding} roleRef");
            let subjects = array(b, "/subjects");
            ensure!(
                subjects.len() == 1
                    && str_at(&subjects[0], "/kind") == "ServiceAccount"
                    && str_at(&subjects[0], "/name") == sa
                    && str_at(&subjects[0], "/namespace") == NAMESPACE,
                "{tree}: {binding} does not bind exactly {NAMESPACE}/{sa}"
            );
            find(&objects, "ServiceAccount", sa)?;
        }
        // Workloads run as those service accounts; the collector accepts the agent's.
        let agent = find(&objects, "DaemonSet", "gatehouse-agent")?;
        let collector = find(&objects, "Deployment", "gatehouse-collector")?;
        ensure!(str_at(agent, "/spec/template/spec/serviceAccountName") == "gatehouse-agent", "{tree}: agent SA");
        ensure!(
            str_at(collector, "/spec/template/spec/serviceAccountName") == "gatehouse-collector",
            "{tree}: collector SA"
        );
        ensure!(
            arg(container(collector)?, "--agent-service-account") == Some("gatehouse:gatehouse-agent"),
            "{tree}: collector does not accept the agent's service account"
        );
    }
    Ok(())
}

#[test]
fn container_args_are_flags_of_the_binaries() -> Result<()> {
    let helps = helps()?;
    let mut errors = Vec::new();
    for tree in TREES {
        let Some(objects) = kustomize(tree)? else {
            return Ok(());
        };
        let n = check_object_flags(&objects, &helps, tree, &mut errors);
        ensure!(n == 2, "{tree}: {n} Gatehouse containers, expected 2");
    }
    check_object_flags(&helm_rendering()?, &helps, "helm rendering", &mut errors);

    // Flags in the chart's templates, also those behind values that are off by default.
    for entry in std::fs::read_dir(repo().join("deploy/helm/gatehouse/templates"))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        let binary = if text.contains("gatehouse-agent\") }}") {
            "gatehouse-agent"
        } else if text.contains("gatehouse-collector\") }}") {
            "gatehouse-collector"
        } else {
            continue;
        };
        let args: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- --"))
            .map(|a| format!("--{a}"))
            .collect();
        helps[binary].check(binary, &args, &[], &mut errors);
    }

    // The compose file's commands and environment.
    let compose = &parse_yaml(&read("deploy/docker-compose.yml")?, "deploy/docker-compose.yml")?[0];
    for (service, binary) in [("agent", "gatehouse-agent"), ("collector", "gatehouse-collector")] {
        let s = compose
            .pointer(&format!("/services/{service}"))
            .with_context(|| format!("compose has no service {service}"))?;
        let args: Vec<String> = strings(s, "/command").into_iter().collect();
        ensure!(!args.is_empty(), "compose {service} has no command");
        let env: Vec<String> = s
            .pointer("/environment")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        helps[binary].check(binary, &args, &env, &mut errors);
    }
    if !errors.is_empty() {
        bail!("flags not known to the binaries:\n  {}", errors.join("\n  "));
    }
    Ok(())
}

/// Removes the labels only Helm sets, everywhere in an object.
fn strip_helm_labels(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for label in HELM_ONLY_LABELS {
                map.remove(*label);
            }
            map.values_mut().for_each(strip_helm_labels);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_helm_labels),
        _ => {}
    }
}

fn by_identity(objects: Vec<Value>) -> BTreeMap<(String, String), Value> {
    objects
        .into_iter()
        .map(|o| ((kind(&o).to_string(), name(&o).to_string()), o))
        .collect()
}

#[test]
fn helm_rendering_equals_kustomize_base() -> Result<()> {
    let Some(base) = kustomize("base")? else {
        return Ok(());
    };
    // The chart leaves the namespace to `helm install --namespace` (see deploy/README.md).
    let base = by_identity(base.into_iter().filter(|o| kind(o) != "Namespace").collect());
    let mut rendered = helm_rendering()?;
    rendered.iter_mut().for_each(strip_helm_labels);
    let rendered = by_identity(rendered);
    let only_base: Vec<_> = base.keys().filter(|k| !rendered.contains_key(*k)).collect();
    let only_helm: Vec<_> = rendered.keys().filter(|k| !base.contains_key(*k)).collect();
    ensure!(
        only_base.is_empty() && only_helm.is_empty(),
        "object sets differ: only in kustomize base {only_base:?}, only in the helm rendering {only_helm:?}"
    );
    for (id, object) in &base {
        ensure!(
            rendered.get(id) == Some(object),
            "{id:?} differs between deploy/kustomize/base and deploy/helm/rendered:\n base: {object}\n helm: {}",
            rendered.get(id).map(Value::to_string).unwrap_or_default()
        );
    }
    Ok(())
}

/// One key line of `values.yaml`: its dotted path, whether it holds a scalar (or `{}`/`[]`)
/// on the same line, and whether a comment line sits right above it.
#[derive(Debug)]
struct ValueKey {
    path: String,
    leaf: bool,
    documented: bool,
}

/// The keys of `values.yaml` by indentation (the file keeps to block maps and simple lists).
fn value_keys(text: &str) -> Vec<ValueKey> {
    let mut keys = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut previous = "";
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let is_key = !trimmed.starts_with('#')
            && !trimmed.starts_with('-')
            && trimmed.split_once(':').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
            });
        if is_key {
            let (key, rest) = trimmed.split_once(':').unwrap_or_default();
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            let mut path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
            path.push(key);
            keys.push(ValueKey {
                path: path.join("."),
                leaf: !rest.trim().is_empty(),
                documented: previous.trim_start().starts_with('#'),
            });
            stack.push((indent, key.to_string()));
        }
        if !trimmed.is_empty() {
            previous = line;
        }
    }
    keys
}

/// Whether the templates use `.Values.<path>` as a whole (not only a child of it).
fn used_whole(templates: &str, path: &str) -> bool {
    let needle = format!(".Values.{path}");
    templates.match_indices(&needle).any(|(at, _)| {
        let next = templates[at + needle.len()..].chars().next().unwrap_or(' ');
        !(next.is_ascii_alphanumeric() || next == '_' || next == '.')
    })
}

/// Every template file's text, by file name.
fn templates() -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for entry in std::fs::read_dir(repo().join("deploy/helm/gatehouse/templates"))? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        map.insert(file, std::fs::read_to_string(&path)?);
    }
    Ok(map)
}

#[test]
fn every_chart_value_is_used_and_documented() -> Result<()> {
    let values = read("deploy/helm/gatehouse/values.yaml")?;
    let all_templates: String = templates()?.into_values().collect();
    let keys = value_keys(&values);
    ensure!(keys.len() > 40, "values.yaml parsed into only {} keys", keys.len());
    let mut errors = Vec::new();
    let mut whole: Vec<String> = Vec::new();
    for key in &keys {
        let inside_used = whole.iter().any(|w| key.path.starts_with(&format!("{w}.")));
        if inside_used {
            continue; // part of a block a template passes on whole (toYaml, range, with)
        }
        if !key.documented {
            errors.push(format!("{}: no comment above it", key.path));
        }
        if used_whole(&all_templates, &key.path) {
            whole.push(key.path.clone());
        } else if key.leaf {
            errors.push(format!("{}: no template uses .Values.{}", key.path, key.path));
        }
    }
    // A map whose children are all unused would slip through above: check maps too.
    for key in keys.iter().filter(|k| !k.leaf) {
        let covered = whole
            .iter()
            .any(|w| w == &key.path || key.path.starts_with(&format!("{w}.")) || w.starts_with(&format!("{}.", key.path)));
        if !covered {
            errors.push(format!("{}: nothing under it is used", key.path));
        }
    }
    if !errors.is_empty() {
        bail!("values.yaml:\n  {}", errors.join("\n  "));
    }
    Ok(())
}

/// What a template condition evaluates to with the default values, when this test can tell.
fn condition(expr: &str, values: &Value) -> Option<bool> {
    let expr = expr.trim();
    if expr == "include \"gatehouse.inClusterClickHouse\" ." {
        let enabled = values.pointer("/clickhouse/enabled") == Some(&Value::Bool(true));
        let external = str_at(values, "/externalClickHouse/url");
        return Some(enabled && external.is_empty());
    }
    let path = expr.strip_prefix(".Values.")?;
    if !path.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
        return None;
    }
    let v = values.pointer(&format!("/{}", path.replace('.', "/")))?;
    Some(match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
    })
}

/// The lines of a template that render verbatim with the default values: outside template
/// actions, in branches this test can evaluate and that are taken.
fn verbatim_lines(template: &str, values: &Value) -> Vec<String> {
    let mut frames: Vec<Option<bool>> = Vec::new();
    let mut lines = Vec::new();
    for line in template.lines() {
        let t = line.trim();
        let action = t
            .strip_prefix("{{-")
            .or_else(|| t.strip_prefix("{{"))
            .map(|a| a.trim_end_matches("}}").trim_end_matches('-').trim());
        match action {
            Some(a) if a.starts_with("if ") => frames.push(condition(&a[3..], values)),
            Some(a) if a.starts_with("with ") => frames.push(condition(&a[5..], values)),
            Some(a) if a.starts_with("range ") => frames.push(None),
            Some("else") => {
                if let Some(top) = frames.last_mut() {
                    *top = top.map(|b| !b);
                }
            }
            Some(a) if a.starts_with("else") => {
                if let Some(top) = frames.last_mut() {
                    *top = None;
                }
            }
            Some("end") => {
                frames.pop();
            }
            _ => {
                let active = frames.iter().all(|f| *f == Some(true));
                if active && !t.is_empty() && t != "---" && !line.contains("{{") {
                    lines.push(line.to_string());
                }
            }
        }
    }
    lines
}

#[test]
fn helm_templates_agree_with_the_checked_in_rendering() -> Result<()> {
    let values: Value =
        serde_saphyr::from_str(&read("deploy/helm/gatehouse/values.yaml")?).context("values.yaml")?;
    let rendered = read("deploy/helm/rendered/gatehouse.yaml")?;
    // The rendering's sections, by the template that produced them.
    let mut sections: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in rendered.lines() {
        if let Some(file) = line.strip_prefix("# Source: gatehouse/templates/") {
            current = Some(file.to_string());
            continue;
        }
        if let Some(file) = &current {
            let section = sections.entry(file.clone()).or_default();
            section.push_str(line);
            section.push('\n');
        }
    }
    let mut errors = Vec::new();
    for (file, text) in templates()? {
        if !file.ends_with(".yaml") {
            continue; // _helpers.tpl, NOTES.txt
        }
        let lines = verbatim_lines(&text, &values);
        let Some(section) = sections.get(&file) else {
            if !lines.is_empty() {
                errors.push(format!("{file} renders with the defaults but has no section"));
            }
            continue;
        };
        let rendered_lines: BTreeSet<&str> = section.lines().collect();
        for line in lines {
            if !rendered_lines.contains(line.as_str()) {
                errors.push(format!("{file}: {line:?} is not in its rendering"));
            }
        }
    }
    for file in sections.keys() {
        if !repo().join("deploy/helm/gatehouse/templates").join(file).is_file() {
            errors.push(format!("rendering has a section of unknown template {file}"));
        }
    }
    if !errors.is_empty() {
        bail!(
            "deploy/helm/rendered/gatehouse.yaml is out of date with the templates:\n  {}",
            errors.join("\n  ")
        );
    }

    // Where helm exists, the real rendering must equal the checked-in one.
    let helm = Command::new("helm").arg("version").output();
    if !helm.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIP: no `helm` binary: compared the templates' verbatim lines only; \
             `helm template gatehouse deploy/helm/gatehouse --namespace gatehouse` is not checked"
        );
        return Ok(());
    }
    let out = Command::new("helm")
        .args(["template", "gatehouse"])
        .arg(repo().join("deploy/helm/gatehouse"))
        .args(["--namespace", NAMESPACE])
        .output()
        .context("running helm template")?;
    ensure!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let real = by_identity(parse_yaml(&String::from_utf8_lossy(&out.stdout), "helm template")?);
    let checked_in = by_identity(helm_rendering()?);
    ensure!(real == checked_in, "helm template differs from deploy/helm/rendered/gatehouse.yaml");
    Ok(())
}

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    op: String,
    args: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
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
fn workspace_binaries() -> Result<BTreeMap<String, BTreeSet<String>>> {
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
fn toml_like_names(text: &str) -> Value {
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
fn option_values<'a>(command: &'a str, option: &str) -> Vec<&'a str> {
    let words: Vec<&str> = command.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == option)
        .map(|w| w[1])
        .collect()
}

/// Static checks of one Dockerfile; returns the binaries its last stage runs.
fn check_dockerfile(rel: &str, errors: &mut Vec<String>) -> Result<Vec<String>> {
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
                    errors.push(format!("{rel}: FROM {image} is neither a stage nor a tagged image"));
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
                                built.entry(current.clone()).or_default().insert(b.to_string());
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
                            errors.push(format!("{rel}: COPY --from={stage}: no such earlier stage"));
                            continue;
                        };
                        for src in sources {
                            let bin = src.strip_prefix("/src/target/release/").unwrap_or("");
                            if !bins.contains(bin) {
                                errors.push(format!("{rel}: COPY {src}: stage {stage} builds no such binary"));
                            }
                        }
                        copied_into_last.insert(dest.to_string());
                    }
                    None => {
                        for src in sources {
                            if !repo().join(src).exists() {
                                errors.push(format!("{rel}: COPY {src}: no such path in the repository"));
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
        errors.push(format!("{rel}: ENTRYPOINT {program} is not copied into the last stage"));
    }
    let binary = program.rsplit('/').next().unwrap_or_default().to_string();
    Ok(vec![binary])
}

/// `cargo xtask SUB FLAGS...`: the subcommand and its flags exist in the built xtask.
fn check_xtask(rel: &str, invocation: &str, errors: &mut Vec<String>) -> Result<()> {
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
        errors.push(format!("{rel}: `cargo xtask {sub}` is not an xtask subcommand"));
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

#[test]
fn dockerfiles_use_only_real_build_steps() -> Result<()> {
    let mut errors = Vec::new();
    let agent = check_dockerfile("deploy/docker/agent.Dockerfile", &mut errors)?;
    let collector = check_dockerfile("deploy/docker/collector.Dockerfile", &mut errors)?;
    ensure!(agent == ["gatehouse-agent"], "agent image runs {agent:?}");
    ensure!(collector == ["gatehouse-collector"], "collector image runs {collector:?}");

    // The agent image builds the eBPF object the way setup and build-ebpf do.
    let dockerfile = read("deploy/docker/agent.Dockerfile")?;
    let setup = read("xtask/src/setup.rs")?;
    for package in ["rustc-web", "rust-web-src", "llvm-22-dev", "libpolly-22-dev", "libzstd-dev", "zlib1g-dev"] {
        ensure!(setup.contains(&format!("\"{package}\"")), "setup.rs no longer installs {package}");
        ensure!(dockerfile.contains(package), "agent.Dockerfile does not install {package}");
    }
    let linker = setup
        .lines()
        .find_map(|l| l.trim().strip_prefix("const BPF_LINKER_VERSION: &str = \""))
        .and_then(|v| v.strip_suffix("\";"))
        .context("BPF_LINKER_VERSION not found in xtask/src/setup.rs")?;
    ensure!(
        dockerfile.contains(&format!("bpf-linker@{linker} ")),
        "agent.Dockerfile does not install bpf-linker {linker}"
    );
    let build_rs = read("agent/build.rs")?;
    ensure!(
        build_rs.contains("GATEHOUSE_EBPF_OBJECT") && dockerfile.contains("GATEHOUSE_EBPF_OBJECT=/src/target/ebpf/gatehouse-ebpf.o"),
        "the agent build must embed the object build-ebpf wrote"
    );
    ensure!(
        read("xtask/src/util.rs")?.contains("\"gatehouse-ebpf.o\"") && dockerfile.contains("test -s target/ebpf/gatehouse-ebpf.o"),
        "agent.Dockerfile must refuse to build without the eBPF object"
    );

    // The collector image runs as non-root.
    let collector_file = read("deploy/docker/collector.Dockerfile")?;
    let user = instructions(&collector_file)
        .into_iter()
        .filter(|i| i.op == "USER")
        .next_back()
        .map(|i| i.args)
        .unwrap_or_default();
    ensure!(
        !user.is_empty() && !user.starts_with("0") && !user.starts_with("root"),
        "collector image user {user:?} is root"
    );
    if !errors.is_empty() {
        bail!("Dockerfiles:\n  {}", errors.join("\n  "));
    }
    Ok(())
}

#[test]
fn compose_file_wires_the_three_services() -> Result<()> {
    let compose = &parse_yaml(&read("deploy/docker-compose.yml")?, "deploy/docker-compose.yml")?[0];
    for service in ["clickhouse", "collector", "agent"] {
        ensure!(
            compose.pointer(&format!("/services/{service}")).is_some(),
            "compose has no {service}"
        );
    }
    for (service, dockerfile) in [
        ("collector", "deploy/docker/collector.Dockerfile"),
        ("agent", "deploy/docker/agent.Dockerfile"),
    ] {
        let s = &compose["services"][service];
        let context = repo().join("deploy").join(str_at(s, "/build/context"));
        ensure!(
            context.join(str_at(s, "/build/dockerfile")) == context.join(dockerfile)
                && context.join(dockerfile).is_file()
                && context.join("Cargo.toml").is_file(),
            "compose {service}: build context/dockerfile do not point at {dockerfile}"
        );
        ensure!(s["read_only"] == Value::Bool(true), "compose {service} is not read_only");
        ensure!(strings(s, "/cap_drop").contains("ALL"), "compose {service} keeps capabilities");
        for port in strings(s, "/ports") {
            ensure!(port.starts_with("127.0.0.1:"), "compose {service} publishes {port} beyond loopback");
        }
    }
    let args = |service: &str| strings(&compose["services"][service], "/command");
    ensure!(
        args("collector").contains("--clickhouse-url=http://clickhouse:8123"),
        "compose collector does not write to the clickhouse service"
    );
    ensure!(
        args("agent").contains("--collector-url=https://collector:9443"),
        "compose agent does not ship to the collector service"
    );
    Ok(())
}
