//! In-cluster discovery, as client-go's `InClusterConfig`: the API server address from
//! `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` (the service-account token and CA
//! are the files kubelet mounts, see [`crate::config`]).

use super::UpstreamError;

/// `https://HOST:PORT` from the pod's environment (`env` looks a variable up).
pub fn url_from_env(env: impl Fn(&str) -> Option<String>) -> Result<String, UpstreamError> {
    let get = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    match (
        get("KUBERNETES_SERVICE_HOST"),
        get("KUBERNETES_SERVICE_PORT"),
    ) {
        (Some(host), Some(port)) => {
            // An IPv6 service address needs brackets in a URL.
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host
            };
            Ok(format!("https://{host}:{port}"))
        }
        _ => Err(UpstreamError::InCluster(
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set, so this is not \
             a pod; outside a cluster use --upstream-kubeconfig or --upstream-url"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn service_address_becomes_the_url() -> Result<(), UpstreamError> {
        let v4 = [
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
        ];
        assert_eq!(url_from_env(env(&v4))?, "https://10.96.0.1:443");
        let v6 = [
            ("KUBERNETES_SERVICE_HOST", "fd00::1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
        ];
        assert_eq!(url_from_env(env(&v6))?, "https://[fd00::1]:443");
        Ok(())
    }

    #[test]
    fn outside_a_pod_is_a_clear_error() {
        let err = url_from_env(env(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")]));
        let text = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("--upstream-kubeconfig"), "{text}");
    }
}
