//! Checks of `deploy/`: the kustomize trees render with the real kubectl, the objects have
//! the security settings and RBAC they must, every flag and `GATEHOUSE_*` variable they pass
//! is one the built binaries' `--help` lists, the Helm chart's checked-in default rendering
//! equals the kustomize base, every chart value is used and documented, and the Dockerfiles
//! and compose file use only real build steps and files of this repository. The policy
//! ConfigMap is deploy/policy/default.yaml and passes `gatehouse policy check`; the eks
//! overlay runs the agent with the EKS upstream credential.
//!
//! Needs `/usr/bin/kubectl` (skips loudly without it) and the built binaries
//! (`cargo build -p gatehouse-agent -p gatehouse-collector --bins`).

mod deploy_support;

use anyhow::{Context, Result, bail, ensure};
use deploy_support::chart::*;
use deploy_support::docker::*;
use deploy_support::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

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
            let cluster_scoped =
                matches!(kind(o), "Namespace" | "ClusterRole" | "ClusterRoleBinding");
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
                    let labels = w
                        .pointer("/spec/template/metadata/labels")
                        .and_then(Value::as_object);
                    match (sel, labels) {
                        (Some(sel), Some(labels)) => {
                            sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                        }
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
                ensure!(
                    found,
                    "{tree}: Service {} targets unknown port {target:?}",
                    name(s)
                );
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
        ensure!(
            pod.pointer("/hostPID") == Some(&Value::Bool(true)),
            "{tree}: agent needs hostPID"
        );
        ensure!(
            pod.pointer("/hostNetwork")
                .is_none_or(|v| v == &Value::Bool(false)),
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
        let sc = c
            .pointer("/securityContext")
            .context("agent has no securityContext")?;
        ensure!(
            sc.pointer("/privileged") == Some(&Value::Bool(false)),
            "{tree}: agent privileged"
        );
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
        ensure!(
            added == wanted,
            "{tree}: agent capabilities {added:?}, expected {wanted:?}"
        );

        // Host paths: only the allowed ones, kernel interfaces read-only.
        let mut host_volumes = BTreeMap::new();
        for v in array(pod, "/volumes") {
            if let Some(path) = v.pointer("/hostPath/path").and_then(Value::as_str) {
                ensure!(
                    AGENT_HOST_PATHS.contains(&path),
                    "{tree}: agent mounts host path {path}"
                );
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
            arg(c, "--spool-dir").is_some_and(|d| array(c, "/volumeMounts")
                .iter()
                .any(|m| str_at(m, "/mountPath") == d)),
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
        ensure!(
            str_at(c, "/readinessProbe/httpGet/path") == "/readyz",
            "{tree}: agent readiness"
        );
        ensure!(
            str_at(c, "/livenessProbe/httpGet/path") == "/healthz",
            "{tree}: agent liveness"
        );
        ensure!(
            str_at(c, "/readinessProbe/httpGet/port") == "ops",
            "{tree}: readiness port"
        );
        ensure!(
            str_at(c, "/livenessProbe/httpGet/port") == "ops",
            "{tree}: liveness port"
        );
        ensure!(
            array(c, "/env")
                .iter()
                .any(|e| str_at(e, "/name") == "NODE_NAME"
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
        let pod = deploy
            .pointer("/spec/template/spec")
            .context("no pod spec")?;
        ensure!(
            pod.pointer("/securityContext/runAsNonRoot") == Some(&Value::Bool(true)),
            "{tree}: collector pod may run as root"
        );
        let c = container(deploy)?;
        let sc = c
            .pointer("/securityContext")
            .context("collector has no securityContext")?;
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
        for (flag, port) in [
            ("--listen", "http"),
            ("--ingest-listen", "ingest"),
            ("--api-listen", "api"),
        ] {
            let p = arg(c, flag).and_then(port_of);
            ensure!(
                p.is_some() && p == container_port(c, port),
                "{tree}: collector {flag} is not container port {port}"
            );
        }
        ensure!(
            str_at(c, "/readinessProbe/httpGet/path") == "/readyz",
            "{tree}: readiness"
        );
        ensure!(
            str_at(c, "/livenessProbe/httpGet/path") == "/healthz",
            "{tree}: liveness"
        );
        ensure!(
            str_at(c, "/readinessProbe/httpGet/port") == "http",
            "{tree}: readiness port"
        );
        // The password comes from a Secret, never from an argument.
        ensure!(
            arg(c, "--clickhouse-password").is_none()
                && array(c, "/env")
                    .iter()
                    .any(|e| str_at(e, "/name") == "GATEHOUSE_CLICKHOUSE_PASSWORD"
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
                pdb.pointer("/spec/selector/matchLabels")
                    == deploy.pointer("/spec/selector/matchLabels"),
                "{tree}: the PodDisruptionBudget does not select the collector"
            );
        }
    }
    Ok(())
}

#[test]
fn rbac_grants_impersonation_and_tokenreview_only() -> Result<()> {
    let standalone = parse_yaml(
        &read("deploy/agent-impersonation-rbac.yaml")?,
        "deploy/agent-impersonation-rbac.yaml",
    )?;
    let standalone_rules = rules(find(
        &standalone,
        "ClusterRole",
        "gatehouse-agent-impersonator",
    )?);
    let impersonation = BTreeSet::from([
        (
            set(&[""]),
            set(&["users", "groups", "serviceaccounts"]),
            set(&["impersonate"]),
        ),
        (
            set(&["authentication.k8s.io"]),
            set(&["uids", "userextras/*"]),
            set(&["impersonate"]),
        ),
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
        ensure!(
            roles.len() == 2,
            "{tree}: {} roles, expected 2",
            roles.len()
        );
        ensure!(
            rules(find(
                &objects,
                "ClusterRole",
                "gatehouse-agent-impersonator"
            )?) == impersonation,
            "{tree}: agent ClusterRole is not exactly impersonation"
        );
        ensure!(
            rules(find(
                &objects,
                "ClusterRole",
                "gatehouse-collector-tokenreview"
            )?) == tokenreview,
            "{tree}: collector ClusterRole is not exactly create tokenreviews"
        );
        for (binding, role, sa) in [
            (
                "gatehouse-agent-impersonator",
                "gatehouse-agent-impersonator",
                "gatehouse-agent",
            ),
            (
                "gatehouse-collector-tokenreview",
                "gatehouse-collector-tokenreview",
                "gatehouse-collector",
            ),
        ] {
            let b = find(&objects, "ClusterRoleBinding", binding)?;
            ensure!(
                str_at(b, "/roleRef/name") == role,
                "{tree}: {binding} roleRef"
            );
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
        ensure!(
            str_at(agent, "/spec/template/spec/serviceAccountName") == "gatehouse-agent",
            "{tree}: agent SA"
        );
        ensure!(
            str_at(collector, "/spec/template/spec/serviceAccountName") == "gatehouse-collector",
            "{tree}: collector SA"
        );
        ensure!(
            arg(container(collector)?, "--agent-service-account")
                == Some("gatehouse:gatehouse-agent"),
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
    let compose = &parse_yaml(
        &read("deploy/docker-compose.yml")?,
        "deploy/docker-compose.yml",
    )?[0];
    for (service, binary) in [
        ("agent", "gatehouse-agent"),
        ("collector", "gatehouse-collector"),
    ] {
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
        let args: Vec<String> = args.iter().map(|a| interpolate(a)).collect();
        helps[binary].check_values(&format!("compose {service}"), &args, &mut errors);
    }
    if !errors.is_empty() {
        bail!(
            "arguments the binaries do not take:\n  {}",
            errors.join("\n  ")
        );
    }
    Ok(())
}

/// Compose's `${VAR:-default}` becomes the default, `${VAR:?message}` a placeholder value.
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let inner = &rest[start + 2..start + len];
        out.push_str(inner.split_once(":-").map_or("placeholder", |(_, d)| d));
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn helm_rendering_equals_kustomize_base() -> Result<()> {
    let Some(base) = kustomize("base")? else {
        return Ok(());
    };
    // The chart leaves the namespace to `helm install --namespace` (see deploy/README.md).
    let base = by_identity(
        base.into_iter()
            .filter(|o| kind(o) != "Namespace")
            .collect(),
    );
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

#[test]
fn every_chart_value_is_used_and_documented() -> Result<()> {
    let values = read("deploy/helm/gatehouse/values.yaml")?;
    let all_templates: String = templates()?.into_values().collect();
    let keys = value_keys(&values);
    ensure!(
        keys.len() > 40,
        "values.yaml parsed into only {} keys",
        keys.len()
    );
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
            errors.push(format!(
                "{}: no template uses .Values.{}",
                key.path, key.path
            ));
        }
    }
    // A map whose children are all unused would slip through above: check maps too.
    for key in keys.iter().filter(|k| !k.leaf) {
        let covered = whole.iter().any(|w| {
            w == &key.path
                || key.path.starts_with(&format!("{w}."))
                || w.starts_with(&format!("{}.", key.path))
        });
        if !covered {
            errors.push(format!("{}: nothing under it is used", key.path));
        }
    }
    if !errors.is_empty() {
        bail!("values.yaml:\n  {}", errors.join("\n  "));
    }
    Ok(())
}

#[test]
fn helm_templates_agree_with_the_checked_in_rendering() -> Result<()> {
    let values: Value = serde_saphyr::from_str(&read("deploy/helm/gatehouse/values.yaml")?)
        .context("values.yaml")?;
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
                errors.push(format!(
                    "{file} renders with the defaults but has no section"
                ));
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
        if !repo()
            .join("deploy/helm/gatehouse/templates")
            .join(file)
            .is_file()
        {
            errors.push(format!(
                "rendering has a section of unknown template {file}"
            ));
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
    let real = by_identity(parse_yaml(
        &String::from_utf8_lossy(&out.stdout),
        "helm template",
    )?);
    let checked_in = by_identity(helm_rendering()?);
    ensure!(
        real == checked_in,
        "helm template differs from deploy/helm/rendered/gatehouse.yaml"
    );
    Ok(())
}

#[test]
fn dockerfiles_use_only_real_build_steps() -> Result<()> {
    let mut errors = Vec::new();
    let agent = check_dockerfile("deploy/docker/agent.Dockerfile", &mut errors)?;
    let collector = check_dockerfile("deploy/docker/collector.Dockerfile", &mut errors)?;
    ensure!(agent == ["gatehouse-agent"], "agent image runs {agent:?}");
    ensure!(
        collector == ["gatehouse-collector"],
        "collector image runs {collector:?}"
    );

    // The agent image builds the eBPF object the way setup and build-ebpf do.
    let dockerfile = read("deploy/docker/agent.Dockerfile")?;
    let setup = read("xtask/src/setup.rs")?;
    for package in [
        "rustc-web",
        "rust-web-src",
        "llvm-22-dev",
        "libpolly-22-dev",
        "libzstd-dev",
        "zlib1g-dev",
    ] {
        ensure!(
            setup.contains(&format!("\"{package}\"")),
            "setup.rs no longer installs {package}"
        );
        ensure!(
            dockerfile.contains(package),
            "agent.Dockerfile does not install {package}"
        );
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
        build_rs.contains("GATEHOUSE_EBPF_OBJECT")
            && dockerfile.contains("GATEHOUSE_EBPF_OBJECT=/src/target/ebpf/gatehouse-ebpf.o"),
        "the agent build must embed the object build-ebpf wrote"
    );
    ensure!(
        read("xtask/src/util.rs")?.contains("\"gatehouse-ebpf.o\"")
            && dockerfile.contains("test -s target/ebpf/gatehouse-ebpf.o"),
        "agent.Dockerfile must refuse to build without the eBPF object"
    );

    // The collector image runs as non-root.
    let collector_file = read("deploy/docker/collector.Dockerfile")?;
    let user = instructions(&collector_file)
        .into_iter()
        .rfind(|i| i.op == "USER")
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
    let compose = &parse_yaml(
        &read("deploy/docker-compose.yml")?,
        "deploy/docker-compose.yml",
    )?[0];
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
        ensure!(
            s["read_only"] == Value::Bool(true),
            "compose {service} is not read_only"
        );
        ensure!(
            strings(s, "/cap_drop").contains("ALL"),
            "compose {service} keeps capabilities"
        );
        for port in strings(s, "/ports") {
            ensure!(
                port.starts_with("127.0.0.1:"),
                "compose {service} publishes {port} beyond loopback"
            );
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

/// `object` read as the API type `T` and written back: a misspelled or misplaced field
/// disappears, a wrongly typed one fails to parse.
fn round_trip<T>(object: &Value) -> Result<Value>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_json::from_value(object.clone())?;
    Ok(serde_json::to_value(typed)?)
}

/// Where `written` has something `typed` (its round trip) lost or changed, as a JSON
/// pointer; `None` when everything survived. The round trip may add fields (e.g. the
/// `apiVersion` of a volume claim template): those are not differences.
fn lost_in_round_trip(written: &Value, typed: &Value, at: &str) -> Option<String> {
    match (written, typed) {
        (Value::Object(w), Value::Object(t)) => w.iter().find_map(|(k, v)| match t.get(k) {
            Some(tv) => lost_in_round_trip(v, tv, &format!("{at}/{k}")),
            None => Some(format!("{at}/{k}")),
        }),
        (Value::Array(w), Value::Array(t)) if w.len() == t.len() => w
            .iter()
            .zip(t)
            .enumerate()
            .find_map(|(i, (wv, tv))| lost_in_round_trip(wv, tv, &format!("{at}/{i}"))),
        _ if written == typed => None,
        _ => Some(at.to_string()),
    }
}

#[test]
fn built_in_objects_match_the_kubernetes_api_schema() -> Result<()> {
    use k8s_openapi::api::{apps, core, networking, policy, rbac};
    let mut renders = vec![
        ("helm rendering".to_string(), helm_rendering()?),
        (
            "agent-impersonation-rbac.yaml".to_string(),
            parse_yaml(
                &read("deploy/agent-impersonation-rbac.yaml")?,
                "deploy/agent-impersonation-rbac.yaml",
            )?,
        ),
    ];
    for tree in TREES {
        let Some(objects) = kustomize(tree)? else {
            return Ok(());
        };
        renders.push((tree.to_string(), objects));
    }
    let mut errors = Vec::new();
    for (what, objects) in &renders {
        for o in objects {
            let back = match (str_at(o, "/apiVersion"), kind(o)) {
                ("v1", "Namespace") => round_trip::<core::v1::Namespace>(o),
                ("v1", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(o),
                ("v1", "Service") => round_trip::<core::v1::Service>(o),
                ("v1", "ConfigMap") => round_trip::<core::v1::ConfigMap>(o),
                ("apps/v1", "DaemonSet") => round_trip::<apps::v1::DaemonSet>(o),
                ("apps/v1", "Deployment") => round_trip::<apps::v1::Deployment>(o),
                ("apps/v1", "StatefulSet") => round_trip::<apps::v1::StatefulSet>(o),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    round_trip::<rbac::v1::ClusterRole>(o)
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    round_trip::<rbac::v1::ClusterRoleBinding>(o)
                }
                ("networking.k8s.io/v1", "NetworkPolicy") => {
                    round_trip::<networking::v1::NetworkPolicy>(o)
                }
                ("policy/v1", "PodDisruptionBudget") => {
                    round_trip::<policy::v1::PodDisruptionBudget>(o)
                }
                // CRDs of cert-manager and the Prometheus Operator: their schemas are not
                // in k8s-openapi; the other tests check the fields Gatehouse relies on.
                ("cert-manager.io/v1", "Certificate" | "Issuer")
                | ("monitoring.coreos.com/v1", "ServiceMonitor") => continue,
                (api, k) => {
                    errors.push(format!("{what}: unexpected {api} {k} {}", name(o)));
                    continue;
                }
            };
            match back {
                Ok(back) => {
                    if let Some(at) = lost_in_round_trip(o, &back, "") {
                        errors.push(format!(
                            "{what}: {} {}: not in the API schema (or wrongly typed) at {at}",
                            kind(o),
                            name(o)
                        ));
                    }
                }
                Err(e) => errors.push(format!("{what}: {} {}: {e:#}", kind(o), name(o))),
            }
        }
    }
    if !errors.is_empty() {
        bail!(
            "objects the API server would not take as written:\n  {}",
            errors.join("\n  ")
        );
    }
    Ok(())
}

#[test]
fn policy_config_map_is_the_default_policy_and_agents_follow_the_collector() -> Result<()> {
    let default = read("deploy/policy/default.yaml")?;
    // The chart cannot read files outside itself, so it carries a copy.
    ensure!(
        read("deploy/helm/gatehouse/files/default-policy.yaml")? == default,
        "deploy/helm/gatehouse/files/default-policy.yaml is not deploy/policy/default.yaml"
    );
    let mut renders = vec![("helm rendering".to_string(), helm_rendering()?)];
    for tree in TREES {
        let Some(objects) = kustomize(tree)? else {
            return Ok(());
        };
        renders.push((tree.to_string(), objects));
    }
    let cli = gatehouse_tests::harness::stack::find_bin_dir()?.join("gatehouse");
    let scratch = tempfile::tempdir()?;
    for (what, objects) in &renders {
        let cm = find(objects, "ConfigMap", "gatehouse-policy")?;
        let data = str_at(cm, "/data/policy.yaml");
        ensure!(
            data == default,
            "{what}: ConfigMap gatehouse-policy is not deploy/policy/default.yaml"
        );
        // The rendered text, not the source file, is what the collector will load.
        let file = scratch.path().join("policy.yaml");
        std::fs::write(&file, data)?;
        let out = Command::new(&cli)
            .args(["policy", "check"])
            .arg(&file)
            .output()
            .with_context(|| format!("running {}", cli.display()))?;
        ensure!(
            out.status.success(),
            "{what}: gatehouse policy check refuses the ConfigMap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            String::from_utf8_lossy(&out.stdout).contains("is valid"),
            "{what}: gatehouse policy check said {}",
            String::from_utf8_lossy(&out.stdout)
        );

        // The collector reads the file from the mounted ConfigMap.
        let collector = find(objects, "Deployment", "gatehouse-collector")?;
        let c = container(collector)?;
        let policy = arg(c, "--policy").with_context(|| format!("{what}: no --policy"))?;
        let volume = array(collector, "/spec/template/spec/volumes")
            .iter()
            .find(|v| str_at(v, "/configMap/name") == "gatehouse-policy")
            .with_context(|| format!("{what}: collector does not mount gatehouse-policy"))?;
        let mount = array(c, "/volumeMounts")
            .iter()
            .find(|m| str_at(m, "/name") == str_at(volume, "/name"))
            .with_context(|| format!("{what}: policy volume not mounted"))?;
        ensure!(
            policy == format!("{}/policy.yaml", str_at(mount, "/mountPath"))
                && mount.pointer("/readOnly") == Some(&Value::Bool(true)),
            "{what}: --policy={policy} is not the read-only mounted ConfigMap key"
        );

        // Agents follow the collector they ship to and keep the last good policy on the node.
        let agent = container(find(objects, "DaemonSet", "gatehouse-agent")?)?;
        ensure!(
            arg(agent, "--policy-url").is_some()
                && arg(agent, "--policy-url") == arg(agent, "--collector-url"),
            "{what}: agent --policy-url is not its --collector-url"
        );
        ensure!(
            arg(agent, "--policy-file").is_none(),
            "{what}: agent must follow the collector, not a file of its own"
        );
        let spool = arg(agent, "--spool-dir").unwrap_or("/nowhere");
        ensure!(
            arg(agent, "--policy-cache").is_some_and(|p| p.starts_with(&format!("{spool}/"))),
            "{what}: agent --policy-cache is not on the spool volume"
        );
        for flag in ["--default-mask-profile", "--mask-body-limit"] {
            ensure!(arg(agent, flag).is_some(), "{what}: agent has no {flag}");
        }
    }

    // The compose trial does the same with the file itself.
    let compose = &parse_yaml(
        &read("deploy/docker-compose.yml")?,
        "deploy/docker-compose.yml",
    )?[0];
    let collector = &compose["services"]["collector"];
    ensure!(
        strings(collector, "/command").contains("--policy=/etc/gatehouse/policy.yaml")
            && strings(collector, "/volumes")
                .contains("./policy/default.yaml:/etc/gatehouse/policy.yaml:ro"),
        "compose collector does not load deploy/policy/default.yaml"
    );
    ensure!(
        strings(&compose["services"]["agent"], "/command")
            .contains("--policy-url=https://collector:9443"),
        "compose agent does not follow the collector's policy"
    );
    Ok(())
}

#[test]
fn eks_overlay_uses_the_eks_upstream_credential_with_irsa() -> Result<()> {
    let helps = helps()?;
    let mut args_by_tree = BTreeMap::new();
    for tree in TREES {
        let Some(objects) = kustomize(tree)? else {
            return Ok(());
        };
        let agent = find(&objects, "DaemonSet", "gatehouse-agent")?;
        let args: Vec<String> = array(container(agent)?, "/args")
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        let sa = find(&objects, "ServiceAccount", "gatehouse-agent")?;
        let role = str_at(sa, "/metadata/annotations/eks.amazonaws.com~1role-arn");
        if *tree == "overlays/eks" {
            ensure!(
                args.iter().any(|a| a == "--upstream-credential=eks")
                    && args.iter().any(|a| a == "--upstream-in-cluster")
                    && args.iter().any(|a| a
                        .strip_prefix("--eks-cluster-name=")
                        .is_some_and(|n| !n.is_empty())),
                "{tree}: agent does not use the EKS credential with a cluster name: {args:?}"
            );
            ensure!(
                role.starts_with("arn:aws:iam::"),
                "{tree}: agent ServiceAccount has no IRSA role annotation"
            );
        } else {
            ensure!(
                !args.iter().any(|a| a.starts_with("--upstream-credential")) && role.is_empty(),
                "{tree}: the service-account token must stay the default"
            );
        }
        args_by_tree.insert(*tree, args);
    }
    // The agent binary itself takes the overlay's argument list (values, requires,
    // conflicts): `--upstream-credential eks` requires --eks-cluster-name.
    let mut errors = Vec::new();
    helps["gatehouse-agent"].check_values(
        "overlays/eks agent",
        &args_by_tree["overlays/eks"],
        &mut errors,
    );
    ensure!(errors.is_empty(), "{}", errors.join("\n"));

    // The chart's eks block passes the flags the overlay uses (and the optional ones).
    let template = read("deploy/helm/gatehouse/templates/agent-daemonset.yaml")?;
    let block: BTreeSet<String> = template
        .lines()
        .skip_while(|l| !l.contains("if .Values.eks.enabled"))
        .take_while(|l| !l.contains("--oidc-issuer-url"))
        .filter_map(|l| l.trim().strip_prefix("- --"))
        .map(|a| format!("--{}", a.split('=').next().unwrap_or(a)))
        .collect();
    for a in &args_by_tree["overlays/eks"] {
        let flag = a.split('=').next().unwrap_or(a);
        let eks_flag = [
            "--upstream-credential",
            "--eks-cluster-name",
            "--aws-region",
            "--sts-endpoint",
            "--assume-role-arn",
            "--role-session-name",
            "--external-id",
        ]
        .contains(&flag);
        ensure!(
            !eks_flag || block.contains(flag),
            "the chart's eks block does not pass {flag} (it has {block:?})"
        );
    }
    ensure!(
        block.contains("--upstream-credential") && block.contains("--eks-cluster-name"),
        "the chart's eks block is missing its core flags: {block:?}"
    );
    Ok(())
}
