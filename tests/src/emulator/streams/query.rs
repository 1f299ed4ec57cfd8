//! Query parameters of exec/attach/portforward/log, as the kubelet and apiserver accept
//! them (`true`/`1`, the kubelet's `input/output/error` spellings, repeated `command`).

use crate::emulator::runtime::PodSpec;
use crate::emulator::status::ApiError;

/// Parsed parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamQuery {
    /// `container`, if given.
    pub container: Option<String>,
    /// Repeated `command`.
    pub command: Vec<String>,
    /// `stdin` / `input`.
    pub stdin: bool,
    /// `stdout` / `output`.
    pub stdout: bool,
    /// `stderr` / `error`.
    pub stderr: bool,
    /// `tty`.
    pub tty: bool,
    /// `ports` (legacy WebSocket port-forward), repeated or comma-separated.
    pub ports: Vec<u16>,
    /// `follow`.
    pub follow: bool,
    /// `timestamps`.
    pub timestamps: bool,
    /// `tailLines`.
    pub tail_lines: Option<usize>,
    /// `sinceSeconds`.
    pub since_seconds: Option<u64>,
    /// `limitBytes`.
    pub limit_bytes: Option<usize>,
    /// `previous`.
    pub previous: bool,
}

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1" | "True" | "TRUE")
}

/// Parses a raw query string.
pub fn parse(query: Option<&str>) -> Result<StreamQuery, ApiError> {
    let mut q = StreamQuery::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "container" => q.container = Some(v.into_owned()),
            "command" => q.command.push(v.into_owned()),
            "stdin" | "input" => q.stdin = truthy(&v),
            "stdout" | "output" => q.stdout = truthy(&v),
            "stderr" | "error" => q.stderr = truthy(&v),
            "tty" => q.tty = truthy(&v),
            "follow" => q.follow = truthy(&v),
            "timestamps" => q.timestamps = truthy(&v),
            "previous" => q.previous = truthy(&v),
            "ports" => {
                for p in v.split(',').filter(|p| !p.is_empty()) {
                    q.ports.push(p.trim().parse().map_err(|_| {
                        ApiError::bad_request(format!("unable to parse \"{p}\" as a port"))
                    })?);
                }
            }
            "tailLines" => q.tail_lines = Some(number(&k, &v)?),
            "sinceSeconds" => q.since_seconds = Some(number(&k, &v)?),
            "limitBytes" => q.limit_bytes = Some(number(&k, &v)?),
            _ => {}
        }
    }
    Ok(q)
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ApiError> {
    v.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid value {v:?} for {key}")))
}

/// Picks the container like the apiserver: the named one, else the only one.
pub fn container<'a>(pod: &'a PodSpec, name: Option<&str>) -> Result<&'a str, ApiError> {
    match name {
        Some(n) => pod
            .containers
            .iter()
            .find(|c| c.name == n)
            .map(|c| c.name.as_str())
            .ok_or_else(|| {
                ApiError::bad_request(format!("container {n} is not valid for pod {}", pod.name))
            }),
        None => match pod.containers.as_slice() {
            [only] => Ok(only.name.as_str()),
            [] => Err(ApiError::bad_request(format!(
                "pod {} has no containers",
                pod.name
            ))),
            many => {
                let names: Vec<&str> = many.iter().map(|c| c.name.as_str()).collect();
                Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {}, choose one of: [{}]",
                    pod.name,
                    names.join(" ")
                )))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubectl_and_kubelet_spellings() {
        let q = parse(Some(
            "command=sh&command=-c&command=echo%20hi&stdin=true&output=1&tty=0",
        ))
        .unwrap_or_default();
        assert_eq!(q.command, ["sh", "-c", "echo hi"]);
        assert!(q.stdin && q.stdout && !q.tty && !q.stderr);
        let q = parse(Some("ports=80,443&ports=8080&tailLines=3")).unwrap_or_default();
        assert_eq!(q.ports, [80, 443, 8080]);
        assert_eq!(q.tail_lines, Some(3));
        assert!(parse(Some("tailLines=x")).is_err());
    }
}
