//! Errors of the container runtime, worded like the kubelet's where kubectl shows them.

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No such pod in the runtime.
    #[error("pod {0} is not running in the emulator runtime")]
    PodNotFound(String),
    /// No such container in the pod.
    #[error("container {container} is not valid for pod {pod}")]
    ContainerNotFound {
        /// Pod name.
        pod: String,
        /// Container name.
        container: String,
    },
    /// The container's main process is not running.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The executable does not exist (kubelet/runc wording).
    #[error(
        "OCI runtime exec failed: exec failed: unable to start container process: exec: \"{0}\": executable file not found in $PATH: unknown"
    )]
    ExecNotFound(String),
    /// The executable cannot be run.
    #[error(
        "OCI runtime exec failed: exec failed: unable to start container process: exec: \"{0}\": permission denied: unknown"
    )]
    ExecDenied(String),
    /// Attach to a container without `stdin: true` asked for stdin.
    #[error("stdin is not enabled for container {0}")]
    NoStdin(String),
    /// Any other spawn failure.
    #[error("failed to start process")]
    Spawn(#[source] std::io::Error),
}

impl RuntimeError {
    /// Maps a spawn error for `program` to the kubelet's wording.
    pub fn from_spawn(program: &str, e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => Self::ExecNotFound(program.to_string()),
            std::io::ErrorKind::PermissionDenied => Self::ExecDenied(program.to_string()),
            _ => Self::Spawn(e),
        }
    }
}

/// Result shorthand for the runtime.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
