//! The emulator's container runtime: each pod container is a real process tree in a
//! kubelet-named cgroup v2 directory, with captured logs, optional stdin and tty.
//!
//! Interface used by the API layer: the CONTRACT types and [`ContainerRuntime`] methods
//! below keep their signatures. Streams use [`ContainerRuntime::exec`],
//! [`ContainerRuntime::attach`] and [`ContainerRuntime::log`]; the eBPF tests use
//! [`ContainerRuntime::container_cgroup`] and [`ContainerRuntime::container_cgroup_id`].
//!
//! # Layout
//! - [`cgroup`]: kubelet-named cgroup v2 directories (create, join before exec, kill, remove).
//! - [`process`]: spawning a process in its own session with pipes or a pty.
//! - [`pty`]: async pty master, resize, controlling-tty setup.
//! - [`logbuf`]: bounded, timestamped per-container log with followers and live taps.
//! - `container`: one container's main process, pumps and state.
//! - [`exec`]: exec'd processes and attach handles.
//! - [`error`], [`RuntimeError`]: why runtime operations fail.
//!
//! Without a usable cgroup root (none configured, not cgroup2, not root) processes run
//! without cgroups and a warning is logged; they are then killed by process group.

pub mod cgroup;
mod container;
pub mod error;
pub mod exec;
pub mod logbuf;
pub mod process;
pub mod pty;

pub use error::{Result, RuntimeError};
pub use exec::{AttachHandle, ExecOptions, ExecProcess};
pub use logbuf::{LogBuffer, LogEntry, LogStream};

use container::Container;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// The cgroup root actually in use (None when cgroups are unavailable).
    cgroup_root: Option<PathBuf>,
    pods: Mutex<HashMap<String, Arc<PodState>>>,
    // --- masking tests ---
    /// `pods/log` frame size (0: one frame per line), so tests can split a line anywhere.
    log_chunk_bytes: std::sync::atomic::AtomicUsize,
}

/// A started pod.
#[derive(Debug)]
struct PodState {
    spec: PodSpec,
    containers: Vec<Arc<Container>>,
    port_map: Mutex<HashMap<u16, u16>>,
}

/// How long stop waits for a cgroup to empty after `cgroup.kill`.
const KILL_WAIT: Duration = Duration::from_secs(3);

impl ContainerRuntime {
    /// Creates the runtime; creates `cgroup_root` if set.
    pub fn new(config: RuntimeConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.work_dir)?;
        let cgroup_root = match &config.cgroup_root {
            Some(root) => match cgroup::usable_root(root) {
                Ok(()) => Some(root.clone()),
                Err(e) => {
                    tracing::warn!(root = %root.display(), error = %e,
                        "cgroup root unusable; container processes run without cgroups");
                    None
                }
            },
            None => None,
        };
        Ok(Self {
            config,
            cgroup_root,
            pods: Mutex::new(HashMap::new()),
            log_chunk_bytes: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    // --- masking tests ---
    /// Serves `pods/log` in frames of at most `bytes` (0: one frame per line, the default).
    pub fn set_log_chunk_bytes(&self, bytes: usize) {
        self.log_chunk_bytes
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// The `pods/log` frame size (0: one frame per line).
    pub fn log_chunk_bytes(&self) -> usize {
        self.log_chunk_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The settings this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The cgroup root in use, `None` when processes run without cgroups.
    pub fn cgroup_root(&self) -> Option<&std::path::Path> {
        self.cgroup_root.as_deref()
    }

    fn pods(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PodState>>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pod(&self, uid: &str) -> Option<Arc<PodState>> {
        self.pods().get(uid).cloned()
    }

    fn container(&self, pod_uid: &str, name: &str) -> Result<Arc<Container>> {
        let pod = self
            .pod(pod_uid)
            .ok_or_else(|| RuntimeError::PodNotFound(pod_uid.to_string()))?;
        pod.containers
            .iter()
            .find(|c| c.spec.name == name)
            .cloned()
            .ok_or_else(|| RuntimeError::ContainerNotFound {
                pod: pod.spec.name.clone(),
                container: name.to_string(),
            })
    }

    /// Starts every container's main process of `pod` (idempotent per pod uid).
    pub async fn start_pod(&self, pod: PodSpec) {
        if self.pod(&pod.uid).is_some() {
            return;
        }
        let mut containers = Vec::new();
        for spec in &pod.containers {
            let dir = self.cgroup_root.as_ref().and_then(|root| {
                let dir = cgroup::container_scope(root, &pod.uid, &spec.container_id);
                match std::fs::create_dir_all(&dir) {
                    Ok(()) => Some(dir),
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e,
                            "cannot create container cgroup; running without it");
                        None
                    }
                }
            });
            let cwd = self.config.work_dir.join(&pod.uid).join(&spec.name);
            if let Err(e) = std::fs::create_dir_all(&cwd) {
                tracing::warn!(dir = %cwd.display(), error = %e, "cannot create container dir");
            }
            containers.push(Container::start(spec.clone(), &pod.name, dir, cwd));
        }
        let state = Arc::new(PodState {
            spec: pod.clone(),
            containers,
            port_map: Mutex::new(HashMap::new()),
        });
        let mut pods = self.pods();
        // Another start_pod may have raced us: keep the first, kill ours.
        if pods.contains_key(&pod.uid) {
            drop(pods);
            stop_containers(&state);
            return;
        }
        pods.insert(pod.uid.clone(), state);
    }

    /// Current state of one container.
    pub fn container_state(&self, pod_uid: &str, container: &str) -> ContainerState {
        match self.container(pod_uid, container) {
            Ok(c) => c.state.borrow().clone(),
            Err(_) => ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
        }
    }

    /// The container's cgroup v2 directory (`…/cri-containerd-<id>.scope`), if cgroups are used.
    pub fn container_cgroup(&self, pod_uid: &str, container: &str) -> Option<PathBuf> {
        self.container(pod_uid, container).ok()?.cgroup.clone()
    }

    /// The container's cgroup id (directory inode = `bpf_get_current_cgroup_id()`).
    pub fn container_cgroup_id(&self, pod_uid: &str, container: &str) -> Option<u64> {
        cgroup::cgroup_id(&self.container_cgroup(pod_uid, container)?).ok()
    }

    /// Pid of the container's main process (while it runs).
    pub fn main_pid(&self, pod_uid: &str, container: &str) -> Option<u32> {
        self.container(pod_uid, container).ok()?.main_pid
    }

    /// The container's log.
    pub fn log(&self, pod_uid: &str, container: &str) -> Result<Arc<LogBuffer>> {
        Ok(self.container(pod_uid, container)?.log.clone())
    }

    /// Runs a process in the container (its cgroup, env and working directory).
    pub fn exec(&self, pod_uid: &str, container: &str, opts: ExecOptions) -> Result<ExecProcess> {
        let c = self.container(pod_uid, container)?;
        let hostname = self
            .pod(pod_uid)
            .map(|p| p.spec.name.clone())
            .unwrap_or_default();
        exec::exec(&c, &hostname, opts)
    }

    /// Attaches to the container's main process.
    pub fn attach(&self, pod_uid: &str, container: &str, stdin: bool) -> Result<AttachHandle> {
        let c = self.container(pod_uid, container)?;
        exec::attach(&c, stdin)
    }

    /// Sets where port-forward connects for this pod: pod port → 127.0.0.1 port (see
    /// [`parse_port_map`] for the `emulator.gatehouse.dev/port-map` annotation).
    pub fn set_port_map(&self, pod_uid: &str, map: HashMap<u16, u16>) {
        if let Some(p) = self.pod(pod_uid) {
            *p.port_map.lock().unwrap_or_else(|e| e.into_inner()) = map;
        }
    }

    /// The loopback port that pod port `port` forwards to (`port` itself unless mapped).
    pub fn forward_target(&self, pod_uid: &str, port: u16) -> u16 {
        self.pod(pod_uid)
            .and_then(|p| {
                p.port_map
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&port)
                    .copied()
            })
            .unwrap_or(port)
    }

    /// Kills the pod's processes and removes its cgroups.
    pub async fn stop_pod(&self, pod_uid: &str) {
        let Some(state) = self.pods().remove(pod_uid) else {
            return;
        };
        let slice = self
            .cgroup_root
            .as_ref()
            .map(|r| cgroup::pod_slice(r, pod_uid));
        let _ = tokio::task::spawn_blocking(move || {
            stop_containers(&state);
            if let Some(slice) = slice
                && let Err(e) = cgroup::remove_tree(&slice)
            {
                tracing::warn!(dir = %slice.display(), error = %e, "cannot remove pod cgroup");
            }
        })
        .await;
    }

    /// Kills everything and removes `cgroup_root` (emulator shutdown).
    pub async fn shutdown(&self) {
        let uids: Vec<String> = self.pods().keys().cloned().collect();
        for uid in uids {
            self.stop_pod(&uid).await;
        }
        if let Some(root) = self.cgroup_root.clone() {
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = cgroup::kill_and_remove(&root, KILL_WAIT) {
                    tracing::warn!(dir = %root.display(), error = %e, "cannot remove cgroup root");
                }
            })
            .await;
        }
    }
}

impl Drop for ContainerRuntime {
    /// Last line of defence against leaked processes when a test forgets `shutdown`.
    fn drop(&mut self) {
        let pods: Vec<Arc<PodState>> = self.pods().drain().map(|(_, p)| p).collect();
        for p in &pods {
            stop_containers(p);
        }
        if let Some(root) = &self.cgroup_root {
            let _ = cgroup::kill_and_remove(root, KILL_WAIT);
        }
    }
}

/// Kills every container of a pod and removes their cgroup dirs (blocking, bounded).
fn stop_containers(pod: &PodState) {
    for c in &pod.containers {
        c.kill();
    }
    for c in &pod.containers {
        if let Some(dir) = &c.cgroup
            && let Err(e) = cgroup::kill_and_remove(dir, KILL_WAIT)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove container cgroup");
        }
    }
}

/// Parses the `emulator.gatehouse.dev/port-map` annotation, `"80=18080,443=18443"`
/// (pod port = loopback port); malformed entries are skipped.
pub fn parse_port_map(value: &str) -> HashMap<u16, u16> {
    value
        .split(',')
        .filter_map(|pair| {
            let (from, to) = pair.split_once('=')?;
            Some((from.trim().parse().ok()?, to.trim().parse().ok()?))
        })
        .collect()
}

/// The pod annotation that overrides port-forward targets.
pub const PORT_MAP_ANNOTATION: &str = "emulator.gatehouse.dev/port-map";
