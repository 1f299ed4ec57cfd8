//! Pods: status filled in at creation, container states read from the runtime when the
//! pod is served, and the runtime's `PodSpec` built from the stored object.

use super::runtime::{ContainerRuntime, ContainerSpec, ContainerState, PodSpec};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Node every emulated pod runs on.
pub const NODE_NAME: &str = "emulator-node";

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

fn containers(pod: &Value) -> Vec<Value> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A stable 64-hex container id for `(pod uid, container name)`.
pub fn container_id(uid: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{uid}/{name}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills spec defaults and the initial status of a new pod.
pub fn init(pod: &mut Value, now: &str) {
    let uid = s(pod, "/metadata/uid").to_string();
    if s(pod, "/spec/nodeName").is_empty() {
        pod["spec"]["nodeName"] = json!(NODE_NAME);
    }
    for key in ["restartPolicy", "dnsPolicy", "schedulerName"] {
        if pod["spec"].get(key).is_none() {
            let v = match key {
                "restartPolicy" => "Always",
                "dnsPolicy" => "ClusterFirst",
                _ => "default-scheduler",
            };
            pod["spec"][key] = json!(v);
        }
    }
    if pod["spec"].get("serviceAccountName").is_none() {
        pod["spec"]["serviceAccountName"] = json!("default");
    }
    if let Some(list) = pod
        .pointer_mut("/spec/containers")
        .and_then(Value::as_array_mut)
    {
        for c in list {
            if c.get("imagePullPolicy").is_none() {
                let latest = c["image"]
                    .as_str()
                    .is_some_and(|i| i.ends_with(":latest") || !i.contains(':'));
                c["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
            }
            if c.get("terminationMessagePath").is_none() {
                c["terminationMessagePath"] = json!("/dev/termination-log");
                c["terminationMessagePolicy"] = json!("File");
            }
        }
    }
    let statuses: Vec<Value> = containers(pod)
        .iter()
        .map(|c| {
            let name = s(c, "/name");
            json!({
                "name": name,
                "image": s(c, "/image"),
                "imageID": format!("docker.io/library/{}@sha256:{}", s(c, "/image"), container_id(&uid, "image")),
                "containerID": format!("containerd://{}", container_id(&uid, name)),
                "ready": true,
                "restartCount": 0,
                "started": true,
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    pod["status"] = json!({
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "qosClass": "BestEffort",
        "startTime": now,
        "conditions": conditions(true, now),
        "containerStatuses": statuses,
    });
}

fn conditions(ready: bool, now: &str) -> Value {
    let r = if ready { "True" } else { "False" };
    json!([
        {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "Ready", "status": r, "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "ContainersReady", "status": r, "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
    ])
}

/// Rewrites container states, readiness and phase from what the runtime reports now.
pub fn present(pod: &mut Value, runtime: &ContainerRuntime) {
    // A terminating pod keeps its last state; its processes are being stopped.
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let uid = s(pod, "/metadata/uid").to_string();
    let since = s(pod, "/status/startTime").to_string();
    let Some(statuses) = pod
        .pointer_mut("/status/containerStatuses")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    let (mut running, mut terminated, mut failed) = (0, 0, 0);
    let total = statuses.len();
    for cs in statuses.iter_mut() {
        let name = s(cs, "/name").to_string();
        let (state, ready) = match runtime.container_state(&uid, &name) {
            ContainerState::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if !message.is_empty() {
                    w["message"] = json!(message);
                }
                (json!({"waiting": w}), false)
            }
            ContainerState::Running { started_at } => {
                running += 1;
                (json!({"running": {"startedAt": started_at}}), true)
            }
            ContainerState::Terminated {
                exit_code,
                started_at,
                finished_at,
            } => {
                terminated += 1;
                if exit_code != 0 {
                    failed += 1;
                }
                let reason = if exit_code == 0 { "Completed" } else { "Error" };
                (
                    json!({"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": started_at,
                        "finishedAt": finished_at, "containerID": cs["containerID"].clone()}}),
                    false,
                )
            }
        };
        cs["state"] = state;
        cs["ready"] = json!(ready);
        cs["started"] = json!(ready);
    }
    let all_ready = total > 0 && running == total;
    let phase = if total > 0 && terminated == total {
        if failed > 0 { "Failed" } else { "Succeeded" }
    } else if running > 0 || terminated > 0 {
        "Running"
    } else {
        "Pending"
    };
    pod["status"]["phase"] = json!(phase);
    pod["status"]["conditions"] = conditions(all_ready, &since);
}

/// Starts a stored pod's containers, honouring its port-map annotation.
pub async fn start(runtime: &ContainerRuntime, pod: &Value) {
    let spec = runtime_spec(pod);
    let uid = spec.uid.clone();
    runtime.start_pod(spec).await;
    if let Some(map) = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(super::runtime::PORT_MAP_ANNOTATION))
        .and_then(Value::as_str)
    {
        runtime.set_port_map(&uid, super::runtime::parse_port_map(map));
    }
}

/// The runtime's view of a stored pod.
pub fn runtime_spec(pod: &Value) -> PodSpec {
    let uid = s(pod, "/metadata/uid").to_string();
    let containers = containers(pod)
        .iter()
        .map(|c| {
            let name = s(c, "/name").to_string();
            let strings = |key: &str| -> Vec<String> {
                c.get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            let mut argv = strings("command");
            argv.extend(strings("args"));
            let env = c
                .get("env")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|e| (s(e, "/name").to_string(), s(e, "/value").to_string()))
                .collect();
            ContainerSpec {
                container_id: container_id(&uid, &name),
                name,
                argv,
                env,
                stdin: c.get("stdin").and_then(Value::as_bool).unwrap_or(false),
                tty: c.get("tty").and_then(Value::as_bool).unwrap_or(false),
            }
        })
        .collect();
    PodSpec {
        uid,
        namespace: s(pod, "/metadata/namespace").to_string(),
        name: s(pod, "/metadata/name").to_string(),
        containers,
    }
}
