//! The container runtime alone: kubelet-named cgroups, stop_pod killing whole process
//! trees (with and without cgroups), container state and exit codes.
#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod streams_support;

use gatehouse_tests::emulator::runtime::{
    ContainerRuntime, ContainerState, PodSpec, RuntimeConfig,
};
use std::time::Duration;
use streams_support::{cgroups_available, container};

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; count it as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

async fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..300 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn pod(uid: &str, argv: &[&str]) -> PodSpec {
    PodSpec {
        uid: uid.into(),
        namespace: "default".into(),
        name: "p".into(),
        containers: vec![container("c", argv)],
    }
}

#[tokio::test]
async fn stop_pod_kills_the_tree_and_removes_kubelet_named_cgroups() {
    let work = tempfile::tempdir().unwrap();
    let root = cgroups_available().then(|| {
        std::path::PathBuf::from(format!(
            "/sys/fs/cgroup/unified/gatehouse-runtime-test-{}",
            std::process::id()
        ))
    });
    let rt = ContainerRuntime::new(RuntimeConfig {
        cgroup_root: root.clone(),
        work_dir: work.path().into(),
    })
    .unwrap();
    let uid = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    rt.start_pod(pod(uid, &["sh", "-c", "sleep 1000 & exec sleep 1001"]))
        .await;
    let pid = rt.main_pid(uid, "c").unwrap();
    assert!(matches!(
        rt.container_state(uid, "c"),
        ContainerState::Running { .. }
    ));
    let mut dir = None;
    if let Some(root) = &root {
        let d = rt.container_cgroup(uid, "c").unwrap();
        assert!(d.starts_with(
            root.join("kubepods.slice/kubepods-podaaaaaaaa_bbbb_4ccc_8ddd_eeeeeeeeeeee.slice")
        ));
        assert!(
            d.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("cri-containerd-")
        );
        // Both sleeps (the background one too) are in the scope.
        assert!(
            wait_for(|| std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap()
                .lines()
                .count()
                == 2)
            .await
        );
        assert_eq!(
            rt.container_cgroup_id(uid, "c").unwrap(),
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&d).unwrap())
        );
        dir = Some(d);
    }
    rt.stop_pod(uid).await;
    assert!(wait_for(|| !alive(pid)).await, "main process survived");
    if let Some(d) = dir {
        assert!(!d.exists());
        assert!(!d.parent().unwrap().exists(), "pod slice left behind");
    }
    rt.shutdown().await;
    if let Some(root) = root {
        assert!(!root.exists());
    }
}

#[tokio::test]
async fn without_cgroups_process_groups_are_killed() {
    let work = tempfile::tempdir().unwrap();
    let rt = ContainerRuntime::new(RuntimeConfig {
        cgroup_root: None,
        work_dir: work.path().into(),
    })
    .unwrap();
    let uid = "11111111-2222-4333-8444-555555555555";
    rt.start_pod(pod(
        uid,
        &["sh", "-c", "sleep 1000 & echo $! > bg.pid; wait"],
    ))
    .await;
    assert!(rt.container_cgroup(uid, "c").is_none());
    let pid_file = work.path().join(uid).join("c").join("bg.pid");
    assert!(wait_for(|| pid_file.exists()).await);
    let bg: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(bg));
    rt.stop_pod(uid).await;
    assert!(wait_for(|| !alive(bg)).await, "background child survived");
}

#[tokio::test]
async fn exit_codes_and_failed_starts_show_in_state() {
    let work = tempfile::tempdir().unwrap();
    let rt = ContainerRuntime::new(RuntimeConfig {
        cgroup_root: None,
        work_dir: work.path().into(),
    })
    .unwrap();
    rt.start_pod(pod("u1", &["sh", "-c", "exit 9"])).await;
    assert!(
        wait_for(|| matches!(
            rt.container_state("u1", "c"),
            ContainerState::Terminated { exit_code: 9, .. }
        ))
        .await
    );
    rt.start_pod(pod("u2", &["/no/such/binary"])).await;
    let ContainerState::Waiting { reason, message } = rt.container_state("u2", "c") else {
        panic!("expected Waiting")
    };
    assert_eq!(reason, "RunContainerError");
    assert!(
        message.contains("no such") || message.contains("not found"),
        "{message}"
    );
    rt.shutdown().await;
}
