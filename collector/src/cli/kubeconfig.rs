//! `gatehouse kubeconfig`: the kubectl commands that add a Gatehouse cluster, exec user and context.

use std::ffi::OsString;
use std::path::PathBuf;

/// What to write into the kubeconfig.
#[derive(Debug, Clone)]
pub struct KubeconfigEntry {
    /// Agent URL kubectl talks to (https://...).
    pub server: String,
    /// CA bundle the agent's serving certificate verifies against (embedded).
    pub ca_file: PathBuf,
    /// OIDC issuer URL passed to `gatehouse token`.
    pub issuer_url: String,
    /// OAuth client id passed to `gatehouse token`.
    pub client_id: String,
    /// CA bundle for the issuer passed to `gatehouse token` (for refreshes), if not public.
    pub issuer_ca_file: Option<PathBuf>,
    /// Name used for the cluster, user and context entries.
    pub context_name: String,
    /// Default namespace of the context, if any.
    pub namespace: Option<String>,
    /// exec apiVersion kubectl uses (`client.authentication.k8s.io/v1` or `v1beta1`).
    pub exec_api_version: String,
    /// Absolute path of the `gatehouse` binary kubectl runs.
    pub gatehouse_bin: PathBuf,
}

/// The `kubectl config ...` invocations (arguments only) that write `e`. kubectl does the
/// merge, so other clusters, users and contexts in the file are kept exactly as they were.
pub fn kubectl_commands(e: &KubeconfigEntry) -> Vec<Vec<OsString>> {
    let name = &e.context_name;
    let mut ca = OsString::from("--certificate-authority=");
    ca.push(&e.ca_file);
    let mut cmd = OsString::from("--exec-command=");
    cmd.push(&e.gatehouse_bin);
    let s = |x: &str| OsString::from(x);
    let mut context = vec![
        s("config"),
        s("set-context"),
        s(name),
        s(&format!("--cluster={name}")),
        s(&format!("--user={name}")),
    ];
    if let Some(ns) = &e.namespace {
        context.push(s(&format!("--namespace={ns}")));
    }
    let mut user = vec![
        s("config"),
        s("set-credentials"),
        s(name),
        cmd,
        s(&format!("--exec-api-version={}", e.exec_api_version)),
        s("--exec-arg=token"),
        s(&format!("--exec-arg=--issuer-url={}", e.issuer_url)),
        s(&format!("--exec-arg=--client-id={}", e.client_id)),
    ];
    if let Some(ca) = &e.issuer_ca_file {
        let mut arg = OsString::from("--exec-arg=--issuer-ca-file=");
        arg.push(ca);
        user.push(arg);
    }
    user.push(s("--exec-interactive-mode=IfAvailable"));
    vec![
        vec![
            s("config"),
            s("set-cluster"),
            s(name),
            s(&format!("--server={}", e.server)),
            ca,
            s("--embed-certs=true"),
        ],
        user,
        context,
        vec![s("config"), s("use-context"), s(name)],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ns: Option<&str>) -> KubeconfigEntry {
        KubeconfigEntry {
            server: "https://127.0.0.1:6443".into(),
            ca_file: "/ca.pem".into(),
            issuer_url: "https://issuer".into(),
            client_id: "gatehouse".into(),
            issuer_ca_file: Some("/issuer-ca.pem".into()),
            context_name: "gh".into(),
            namespace: ns.map(str::to_string),
            exec_api_version: "client.authentication.k8s.io/v1".into(),
            gatehouse_bin: "/usr/bin/gatehouse".into(),
        }
    }

    fn has(cmds: &[Vec<OsString>], arg: &str) -> bool {
        cmds.iter().flatten().any(|a| a == arg)
    }

    #[test]
    fn exec_user_runs_token_with_issuer_args() {
        let c = kubectl_commands(&entry(None));
        for a in [
            "--exec-command=/usr/bin/gatehouse",
            "--exec-arg=token",
            "--exec-arg=--issuer-url=https://issuer",
            "--exec-arg=--client-id=gatehouse",
            "--exec-arg=--issuer-ca-file=/issuer-ca.pem",
            "--exec-interactive-mode=IfAvailable",
            "--exec-api-version=client.authentication.k8s.io/v1",
            "--server=https://127.0.0.1:6443",
            "--certificate-authority=/ca.pem",
        ] {
            assert!(has(&c, a), "missing {a}");
        }
        assert!(
            !c.iter()
                .flatten()
                .any(|a| a.to_string_lossy().starts_with("--namespace"))
        );
    }

    #[test]
    fn namespace_goes_on_the_context() {
        assert!(has(
            &kubectl_commands(&entry(Some("dev"))),
            "--namespace=dev"
        ));
    }
}
