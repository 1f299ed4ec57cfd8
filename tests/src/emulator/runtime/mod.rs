//! The emulator's container runtime: each pod container is a real process tree in a
//! kubelet-named cgroup v2 directory, with captured logs, optional stdin and tty.
//!
//! Interface used by the API layer (signatures are the contract; bodies are filled in
//! by the runtime work):

use std::path::PathBuf;

/// Settings for the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// cgroup v2 directory under which `kubepods.slice/...` is created
    /// (e.g. `/sys/fs/cgroup/unified/gatehouse-emu-<pid>`); `None` = no cgroups.
    pub cgroup_root: Option<PathBuf>,
    /// Scratch directory for per-container working dirs and log files.
    pub work_dir: PathBuf,
}

/// One container of a pod, as the runtime needs it.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// `spec.containers[].name`.
    pub name: String,
    /// 64 hex digits; also in `status.containerStatuses[].containerID` as `containerd://<id>`.
    pub container_id: String,
    /// `command` + `args`, as the container's main process argv. Empty = idle (sleeps).
    pub argv: Vec<String>,
    /// `env[]` name/value pairs.
    pub env: Vec<(String, String)>,
    /// `stdin: true` (attach -i possible).
    pub stdin: bool,
    /// `tty: true`.
    pub tty: bool,
}

/// A pod as the runtime needs it.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Containers in spec order.
    pub containers: Vec<ContainerSpec>,
}

/// What a container is doing now, for `status.containerStatuses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Not started (yet); `reason` such as `ContainerCreating` or `RunContainerError`.
    Waiting {
        /// Kubelet-style reason.
        reason: String,
        /// Detail for users.
        message: String,
    },
    /// Main process running since `started_at` (RFC 3339).
    Running {
        /// RFC 3339 start time.
        started_at: String,
    },
    /// Main process exited.
    Terminated {
        /// Exit code (128 + signal for signals).
        exit_code: i32,
        /// RFC 3339 start time.
        started_at: String,
        /// RFC 3339 end time.
        finished_at: String,
    },
}

/// The runtime: owns every pod's processes and cgroups.
///
/// CONTRACT (the API layer relies on these signatures; the runtime work fills them in).
#[derive(Debug)]
pub struct ContainerRuntime {
    config: RuntimeConfig,
}

impl ContainerRuntime {
    /// Creates the runtime; creates `cgroup_root` if set.
    pub fn new(config: RuntimeConfig) -> std::io::Result<Self> {
        Ok(Self { config })
    }

    /// The settings this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Starts every container's main process of `pod` (idempotent per pod uid).
    pub async fn start_pod(&self, pod: PodSpec) {
        let _ = pod;
    }

    /// Current state of one container.
    pub fn container_state(&self, pod_uid: &str, container: &str) -> ContainerState {
        let _ = (pod_uid, container);
        ContainerState::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        }
    }

    /// Kills the pod's processes and removes its cgroups.
    pub async fn stop_pod(&self, pod_uid: &str) {
        let _ = pod_uid;
    }

    /// Kills everything and removes `cgroup_root` (emulator shutdown).
    pub async fn shutdown(&self) {}
}
