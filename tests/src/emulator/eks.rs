//! EKS token authentication as aws-iam-authenticator does it: a `k8s-aws-v1.` token is a
//! base64url presigned STS `GetCallerIdentity` URL; it is checked (STS host, path, only
//! known parameters, `Action`, `X-Amz-Expires` ≤ 60, `X-Amz-Date` fresh, `x-k8s-aws-id`
//! signed), then fetched from STS with `x-k8s-aws-id: <this cluster>` (so a token for
//! another cluster fails STS's signature check), and the returned ARN is mapped to a
//! Kubernetes user through an aws-auth-style table. Assumed-role ARNs
//! (`arn:aws:sts::ACCT:assumed-role/ROLE/SESSION`) map through their role ARN
//! (`arn:aws:iam::ACCT:role/ROLE`). Verified tokens are cached like the API server's
//! webhook token cache.

use super::authn::UserInfo;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Prefix of every EKS token.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// Header that binds a token to a cluster.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// Largest `X-Amz-Expires` accepted.
pub const MAX_EXPIRES_SECS: u64 = 60;
/// A token is accepted this long after it was signed.
pub const TOKEN_MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// Verified tokens are remembered this long (kube-apiserver's webhook cache default).
pub const CACHE_TTL: Duration = Duration::from_secs(120);

/// Query parameters aws-iam-authenticator accepts (lower-cased).
const ALLOWED_PARAMS: &[&str] = &[
    "action",
    "version",
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-security-token",
    "x-amz-signature",
    "x-amz-signedheaders",
    "x-amz-user-agent",
];

/// One `mapRoles` / `mapUsers` entry.
#[derive(Debug, Clone)]
pub struct ArnMapping {
    /// `arn:aws:iam::ACCT:role/NAME` or `arn:aws:iam::ACCT:user/NAME`.
    pub arn: String,
    /// Kubernetes username; `{{SessionName}}` and `{{AccountID}}` are filled in.
    pub username: String,
    /// Kubernetes groups.
    pub groups: Vec<String>,
}

/// How the authenticator is set up.
#[derive(Debug, Clone)]
pub struct EksAuthConfig {
    /// This cluster's id (`x-k8s-aws-id` must be signed with it).
    pub cluster_id: String,
    /// The STS endpoint tokens must point at and that is asked (`http://host:port` in
    /// tests; the host:port is what a token's URL must carry).
    pub sts_endpoint: String,
    /// ARN → user.
    pub mappings: Vec<ArnMapping>,
}

/// The authenticator.
#[derive(Debug)]
pub struct EksAuthenticator {
    config: EksAuthConfig,
    sts_host: String,
    client: Client<HttpConnector, Empty<Bytes>>,
    cache: Mutex<HashMap<String, (UserInfo, Instant)>>,
    // Verifications run one at a time, so concurrent requests with one new token ask STS
    // once (kube-apiserver's token cache deduplicates in-flight checks the same way).
    verifying: tokio::sync::Mutex<()>,
    refusals: Mutex<Vec<String>>,
}

impl EksAuthenticator {
    /// An authenticator for `config`.
    pub fn new(config: EksAuthConfig) -> anyhow::Result<Self> {
        let url = url::Url::parse(&config.sts_endpoint)?;
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("STS endpoint has no host"))?;
        let sts_host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        Ok(Self {
            config,
            sts_host,
            client: Client::builder(TokioExecutor::new()).build_http(),
            cache: Mutex::new(HashMap::new()),
            verifying: tokio::sync::Mutex::new(()),
            refusals: Mutex::new(Vec::new()),
        })
    }

    /// Why tokens were refused so far, in order.
    pub fn refusals(&self) -> Vec<String> {
        self.refusals.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The user a `k8s-aws-v1.` token authenticates as, or why it does not.
    pub async fn authenticate(&self, token: &str) -> Result<UserInfo, String> {
        if let Some(user) = self.cached(token) {
            return Ok(user);
        }
        let _one_at_a_time = self.verifying.lock().await;
        if let Some(user) = self.cached(token) {
            return Ok(user);
        }
        let result = self.verify(token).await;
        match &result {
            Ok(user) => {
                if let Ok(mut cache) = self.cache.lock() {
                    cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                    cache.insert(token.to_string(), (user.clone(), Instant::now()));
                }
            }
            Err(reason) => {
                tracing::info!(%reason, "EKS token refused");
                if let Ok(mut refusals) = self.refusals.lock() {
                    refusals.push(reason.clone());
                }
            }
        }
        result
    }

    fn cached(&self, token: &str) -> Option<UserInfo> {
        let cache = self.cache.lock().ok()?;
        let (user, at) = cache.get(token)?;
        (at.elapsed() < CACHE_TTL).then(|| user.clone())
    }

    async fn verify(&self, token: &str) -> Result<UserInfo, String> {
        let url = self.check_token(token, chrono::Utc::now())?;
        let req = http::Request::get(url.as_str())
            .header(CLUSTER_ID_HEADER, &self.config.cluster_id)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| "STS did not answer in time".to_string())?
            .map_err(|e| format!("calling STS: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("reading STS's answer: {e}"))?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            let code = between(&text, "<Code>", "</Code>").unwrap_or("?");
            return Err(format!(
                "STS refused the presigned request ({status}, {code})"
            ));
        }
        let arn = between(&text, "<Arn>", "</Arn>")
            .or_else(|| json_arn(&text))
            .ok_or("STS answer has no Arn")?
            .to_string();
        let access_key = url
            .query_pairs()
            .find(|(k, _)| k == "X-Amz-Credential")
            .and_then(|(_, v)| v.split('/').next().map(str::to_string))
            .unwrap_or_default();
        self.map(&arn, &access_key)
    }

    /// The structural checks, before STS is asked; the URL to fetch.
    pub fn check_token(
        &self,
        token: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<url::Url, String> {
        let encoded = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or("not a k8s-aws-v1 token")?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|e| format!("token is not base64url: {e}"))?;
        let text = String::from_utf8(bytes).map_err(|_| "token is not UTF-8")?;
        let url = url::Url::parse(&text).map_err(|e| format!("token is not a URL: {e}"))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        };
        if host != self.sts_host {
            return Err(format!("unexpected STS host {host:?}"));
        }
        if url.path() != "/" {
            return Err("unexpected path in presigned URL".into());
        }
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in url.query_pairs() {
            let key = k.to_ascii_lowercase();
            if !ALLOWED_PARAMS.contains(&key.as_str()) {
                return Err(format!("unexpected query parameter {k:?}"));
            }
            if params.insert(key, v.into_owned()).is_some() {
                return Err(format!("query parameter {k:?} repeated"));
            }
        }
        if params.get("action").map(String::as_str) != Some("GetCallerIdentity") {
            return Err("the presigned action is not GetCallerIdentity".into());
        }
        let signed = params
            .get("x-amz-signedheaders")
            .ok_or("no X-Amz-SignedHeaders")?;
        if !signed
            .split(';')
            .any(|h| h.eq_ignore_ascii_case(CLUSTER_ID_HEADER))
        {
            return Err(format!("{CLUSTER_ID_HEADER} is not a signed header"));
        }
        let expires: u64 = params
            .get("x-amz-expires")
            .and_then(|v| v.parse().ok())
            .ok_or("no or invalid X-Amz-Expires")?;
        if expires > MAX_EXPIRES_SECS {
            return Err(format!(
                "X-Amz-Expires {expires} is above {MAX_EXPIRES_SECS}"
            ));
        }
        let date = params.get("x-amz-date").ok_or("no X-Amz-Date")?;
        let signed_at = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
            .map_err(|_| "invalid X-Amz-Date")?
            .and_utc();
        let age = now.signed_duration_since(signed_at);
        if age > chrono::Duration::from_std(TOKEN_MAX_AGE).unwrap_or_default() {
            return Err("token has expired (signed more than 15 minutes ago)".into());
        }
        if age < -chrono::Duration::minutes(5) {
            return Err("token is signed in the future".into());
        }
        Ok(url)
    }

    fn map(&self, arn: &str, access_key: &str) -> Result<UserInfo, String> {
        let (canonical, account, session) = canonicalize(arn)?;
        let entry = self
            .config
            .mappings
            .iter()
            .find(|m| m.arn == canonical)
            .ok_or_else(|| format!("ARN {canonical} is not mapped"))?;
        let username = entry
            .username
            .replace("{{SessionName}}", &session)
            .replace("{{AccountID}}", &account);
        let mut groups = entry.groups.clone();
        groups.push("system:authenticated".into());
        let mut extra = BTreeMap::new();
        extra.insert("arn".to_string(), vec![arn.to_string()]);
        extra.insert("canonicalArn".to_string(), vec![canonical.clone()]);
        extra.insert("sessionName".to_string(), vec![session]);
        extra.insert("accessKeyId".to_string(), vec![access_key.to_string()]);
        Ok(UserInfo {
            username,
            uid: format!("aws-iam-authenticator:{account}:{canonical}"),
            groups,
            extra,
        })
    }
}

/// (canonical ARN, account, session name) of a caller ARN: assumed roles become their
/// role (`arn:aws:iam::ACCT:role/ROLE`), users stay.
pub fn canonicalize(arn: &str) -> Result<(String, String, String), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, _region, account, resource] = parts[..] else {
        return Err(format!("malformed ARN {arn:?}"));
    };
    if prefix != "arn" {
        return Err(format!("malformed ARN {arn:?}"));
    }
    let path: Vec<&str> = resource.split('/').collect();
    match (service, &path[..]) {
        ("sts", &["assumed-role", role, session]) => Ok((
            format!("arn:{partition}:iam::{account}:role/{role}"),
            account.to_string(),
            session.to_string(),
        )),
        ("iam", &["user", ..]) | ("iam", &["role", ..]) => {
            Ok((arn.to_string(), account.to_string(), String::new()))
        }
        _ => Err(format!("unsupported ARN type {arn:?}")),
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

fn json_arn(text: &str) -> Option<&str> {
    let start = text.find("\"Arn\":\"")? + 7;
    let end = text[start..].find('"')? + start;
    Some(&text[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> anyhow::Result<EksAuthenticator> {
        EksAuthenticator::new(EksAuthConfig {
            cluster_id: "prod".into(),
            sts_endpoint: "http://127.0.0.1:4566".into(),
            mappings: vec![ArnMapping {
                arn: "arn:aws:iam::123456789012:role/gatehouse".into(),
                username: "gatehouse-agent:{{SessionName}}".into(),
                groups: vec!["gatehouse:agents".into()],
            }],
        })
    }

    fn token(query: &str) -> String {
        let url = format!("http://127.0.0.1:4566/?{query}");
        format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
        )
    }

    const GOOD: &str = "Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256\
        &X-Amz-Credential=ASIA%2F20261203%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20261203T120000Z\
        &X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature=ab";

    #[test]
    fn structural_checks() -> anyhow::Result<()> {
        let a = auth()?;
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T12:05:00Z")?.to_utc();
        assert!(a.check_token(&token(GOOD), now).is_ok());
        let bad = [
            (
                GOOD.replace("GetCallerIdentity", "AssumeRole"),
                "GetCallerIdentity",
            ),
            (GOOD.replace("Expires=60", "Expires=900"), "X-Amz-Expires"),
            (GOOD.replace("host%3Bx-k8s-aws-id", "host"), "signed header"),
            (
                GOOD.replace("20261203T120000Z", "20261203T110000Z"),
                "expired",
            ),
            (format!("{GOOD}&X-Amz-Foo=1"), "unexpected query parameter"),
        ];
        for (query, why) in bad {
            let err = a.check_token(&token(&query), now).err().unwrap_or_default();
            assert!(err.contains(why), "{query}: {err}");
        }
        let other_host = token(GOOD).replace(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("http://127.0.0.1:4566"),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("http://127.0.0.1:9999"),
        );
        assert!(a.check_token(&other_host, now).is_err());
        assert!(a.check_token("k8s-aws-v1.!!!", now).is_err());
        Ok(())
    }

    #[test]
    fn assumed_roles_map_through_their_role() -> anyhow::Result<()> {
        let a = auth()?;
        let user = a
            .map(
                "arn:aws:sts::123456789012:assumed-role/gatehouse/agent-1",
                "ASIA1",
            )
            .map_err(anyhow::Error::msg)?;
        assert_eq!(user.username, "gatehouse-agent:agent-1");
        assert_eq!(
            user.groups,
            vec!["gatehouse:agents", "system:authenticated"]
        );
        assert!(
            a.map("arn:aws:sts::123456789012:assumed-role/other/s", "A")
                .is_err()
        );
        assert!(canonicalize("nonsense").is_err());
        Ok(())
    }
}
