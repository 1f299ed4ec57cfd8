//! Shared harness for the `streams_*` tests: a runtime in a throwaway cgroup, one pod,
//! and a plain HTTP/1.1 server (upgrades on) that hands every request to `streams::serve`.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod spdy_client;

use gatehouse_tests::emulator::runtime::{ContainerRuntime, ContainerSpec, PodSpec, RuntimeConfig};
use gatehouse_tests::emulator::streams::{self, PodStream};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::net::TcpListener;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running test server; dropping it kills every process of its runtime.
pub struct Server {
    pub addr: SocketAddr,
    pub runtime: Arc<ContainerRuntime>,
    pub pod: PodSpec,
    pub cgroup_root: Option<PathBuf>,
    _work: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// True when this process may create cgroups (root with cgroup2 at the usual place).
pub fn cgroups_available() -> bool {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() }) == 0
        && std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
}

/// One container spec with a deterministic 64-hex id.
pub fn container(name: &str, argv: &[&str]) -> ContainerSpec {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    ContainerSpec {
        name: name.into(),
        container_id: format!("{:064x}", (std::process::id() as u64) << 20 | n as u64),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("GREETING".into(), "hello-from-env".into())],
        stdin: false,
        tty: false,
    }
}

/// Starts the pod and the server.
pub async fn start(containers: Vec<ContainerSpec>) -> Server {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let work = tempfile::tempdir().expect("tempdir");
    let cgroup_root = cgroups_available().then(|| {
        PathBuf::from(format!(
            "/sys/fs/cgroup/unified/gatehouse-streams-test-{}-{n}",
            std::process::id()
        ))
    });
    let runtime = Arc::new(
        ContainerRuntime::new(RuntimeConfig {
            cgroup_root: cgroup_root.clone(),
            work_dir: work.path().to_path_buf(),
        })
        .expect("runtime"),
    );
    let pod = PodSpec {
        uid: format!("1234abcd-0000-4000-8000-{:012x}", n),
        namespace: "default".into(),
        name: "web".into(),
        containers,
    };
    runtime.start_pod(pod.clone()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let rt = runtime.clone();
    let p = pod.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let rt = rt.clone();
            let p = p.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let rt = rt.clone();
                    let p = p.clone();
                    async move {
                        let stream = match req.uri().path().rsplit('/').next() {
                            Some("exec") => PodStream::Exec,
                            Some("attach") => PodStream::Attach,
                            Some("portforward") => PodStream::PortForward,
                            _ => PodStream::Log,
                        };
                        Ok::<_, std::convert::Infallible>(streams::serve(rt, p, stream, req).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Server {
        addr,
        runtime,
        pod,
        cgroup_root,
        _work: work,
        task,
    }
}

impl Server {
    /// `ws://…/api/v1/namespaces/default/pods/web/<sub>?<query>`.
    pub fn ws_url(&self, sub: &str, query: &str) -> String {
        format!(
            "ws://{}/api/v1/namespaces/default/pods/web/{sub}?{query}",
            self.addr
        )
    }

    /// Path and query for raw requests.
    pub fn path(&self, sub: &str, query: &str) -> String {
        format!("/api/v1/namespaces/default/pods/web/{sub}?{query}")
    }

    /// Waits until the container's main process is running.
    pub async fn wait_running(&self, container: &str) {
        for _ in 0..200 {
            if matches!(
                self.runtime.container_state(&self.pod.uid, container),
                gatehouse_tests::emulator::runtime::ContainerState::Running { .. }
            ) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("container {container} never ran");
    }

    /// Stops everything and checks the cgroup root is gone.
    pub async fn shutdown(self) {
        self.runtime.shutdown().await;
        if let Some(root) = &self.cgroup_root {
            assert!(
                !root.exists(),
                "cgroup root left behind: {}",
                root.display()
            );
        }
    }
}
