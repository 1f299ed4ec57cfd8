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
