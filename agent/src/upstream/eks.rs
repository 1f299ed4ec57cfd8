//! The `eks` upstream credential: the agent authenticates to an EKS API server as a
//! dedicated IAM role, with the token `aws eks get-token` makes: `k8s-aws-v1.` + base64url
//! (no padding) of a SigV4-presigned STS `GetCallerIdentity` URL whose signed headers
//! include `x-k8s-aws-id: <cluster name>`.
//!
//! Base credentials come from the AWS default chain (IRSA web-identity token file, EKS Pod
//! Identity, environment, profile); with `--assume-role-arn` they are exchanged for the
//! role's via `AssumeRole`. Role credentials are kept until shortly before they expire
//! (one STS call per credential lifetime); the token is presigned locally from them and
//! renewed well before the API server would refuse it, through a
//! [`RefreshingCache`](super::token_cache::RefreshingCache) (single flight, never expired).

use super::credential::{CredentialError, UpstreamCredential, bearer};
use super::token_cache::{Fetch, Fresh, RefreshingCache};
use crate::config::EksConfig;
use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use futures_util::future::BoxFuture;
use http::HeaderValue;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, SystemTime};

/// Prefix of every EKS token.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// Header naming the cluster, signed into the presigned URL.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// `X-Amz-Expires` of the presigned URL (what aws-iam-authenticator expects).
pub const PRESIGN_EXPIRES: Duration = Duration::from_secs(60);
/// The API server accepts a token for 15 minutes after it was signed; the agent starts
/// renewing after 5 and stops using it after 10, leaving a renewal 5 minutes of retries
/// and the API server's clock 5 minutes of slack.
pub const TOKEN_REFRESH_AFTER: Duration = Duration::from_secs(5 * 60);
/// See [`TOKEN_REFRESH_AFTER`].
pub const TOKEN_USABLE_FOR: Duration = Duration::from_secs(10 * 60);
/// Role credentials are renewed when they expire within this (a token signed with them
/// dies with them).
pub const CREDENTIALS_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// After a 401, a token is replaced only if it is at least this old.
pub const REPRESIGN_AFTER_REJECT: Duration = Duration::from_secs(5);

/// The EKS credential: the agent's bearer token, presigned with the role's credentials.
pub struct EksCredential {
    inner: Arc<Inner>,
    cache: Arc<RefreshingCache<HeaderValue>>,
}

struct Inner {
    config: EksConfig,
    region: String,
    sts_url: url::Url,
    provider: tokio::sync::OnceCell<SharedCredentialsProvider>,
    // Only touched inside a renewal, which the token cache runs one at a time.
    credentials: tokio::sync::Mutex<Option<Credentials>>,
}

static SHARED: LazyLock<Mutex<HashMap<String, Weak<EksCredential>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl EksCredential {
    /// The process-wide credential for `config` (the forwarder and the readiness probe
    /// share one cache, so they don't each call STS). `env` looks a variable up.
    pub fn shared(
        config: &EksConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Arc<Self>, String> {
        let key = format!("{config:?}");
        let mut map = match SHARED.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.retain(|_, weak| weak.strong_count() > 0);
        if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        let credential = Arc::new(Self::new(config, env)?);
        map.insert(key, Arc::downgrade(&credential));
        Ok(credential)
    }

    /// A credential of its own. Checks the settings now; AWS is first contacted on use.
    pub fn new(config: &EksConfig, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        if config.cluster_name.trim().is_empty() {
            return Err("--eks-cluster-name must be set".into());
        }
        if config.external_id.is_some() && config.assume_role_arn.is_none() {
            return Err("--external-id needs --assume-role-arn".into());
        }
        let region = config
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .filter(|r| !r.trim().is_empty())
            .ok_or("no AWS region: set --aws-region (or AWS_REGION)")?;
        let sts = config
            .sts_endpoint
            .clone()
            .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
        let sts_url = url::Url::parse(&sts).map_err(|e| format!("--sts-endpoint {sts:?}: {e}"))?;
        if !matches!(sts_url.scheme(), "https" | "http") || sts_url.host_str().is_none() {
            return Err(format!(
                "--sts-endpoint {sts:?} must be an https URL (http only for a local test server)"
            ));
        }
        let inner = Arc::new(Inner {
            config: config.clone(),
            region,
            sts_url,
            provider: tokio::sync::OnceCell::new(),
            credentials: tokio::sync::Mutex::new(None),
        });
        let minting = inner.clone();
        let fetch: Fetch<HeaderValue> = Arc::new(move || {
            let inner = minting.clone();
            Box::pin(async move { inner.mint().await })
        });
        Ok(Self {
            inner,
            cache: RefreshingCache::new(fetch),
        })
    }
}

impl Inner {
    async fn provider(&self) -> &SharedCredentialsProvider {
        self.provider
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .region(aws_config::Region::new(self.region.clone()));
                if let Some(endpoint) = &self.config.sts_endpoint {
                    loader = loader.endpoint_url(endpoint.clone());
                }
                let sdk = loader.load().await;
                match &self.config.assume_role_arn {
                    Some(role) => {
                        let mut builder = aws_config::sts::AssumeRoleProvider::builder(role)
                            .configure(&sdk)
                            .session_name(self.config.role_session_name.clone());
                        if let Some(id) = &self.config.external_id {
                            builder = builder.external_id(id.clone());
                        }
                        SharedCredentialsProvider::new(builder.build().await)
                    }
                    None => match sdk.credentials_provider() {
                        Some(provider) => provider,
                        None => SharedCredentialsProvider::new(NoBaseCredentials),
                    },
                }
            })
            .await
    }

    /// The role's credentials: cached until they near expiry, else one STS call.
    async fn credentials(&self) -> Result<Credentials, String> {
        let mut cached = self.credentials.lock().await;
        if let Some(c) = cached.as_ref()
            && c.expiry().is_none_or(|at| {
                SystemTime::now() + CREDENTIALS_REFRESH_MARGIN + TOKEN_REFRESH_AFTER < at
            })
        {
            return Ok(c.clone());
        }
        let what = match &self.config.assume_role_arn {
            Some(role) => format!("assuming role {role}"),
            None => "loading AWS credentials from the default chain".into(),
        };
        let fresh = self
            .provider()
            .await
            .provide_credentials()
            .await
            .map_err(|e| format!("{what}: {}", crate::authenticate::jwks::error_chain(&e)))?;
        tracing::info!(
            access_key_id = fresh.access_key_id(),
            expires = ?fresh.expiry().map(chrono::DateTime::<chrono::Utc>::from),
            "obtained AWS credentials for the EKS token"
        );
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    async fn mint(&self) -> Result<Fresh<HeaderValue>, String> {
        let credentials = self.credentials().await?;
        let now = SystemTime::now();
        let token = presign_token(
            &credentials,
            &self.region,
            &self.sts_url,
            &self.config.cluster_name,
            now,
        )?;
        let header = bearer(&token, "the EKS token").map_err(|e| e.to_string())?;
        let mut refresh_at = now + TOKEN_REFRESH_AFTER;
        let mut expires_at = now + TOKEN_USABLE_FOR;
        if let Some(lapse) = credentials.expiry() {
            refresh_at =
                refresh_at.min(lapse.checked_sub(CREDENTIALS_REFRESH_MARGIN).unwrap_or(now));
            expires_at = expires_at.min(lapse);
        }
        Ok(Fresh {
            value: header,
            refresh_at,
            expires_at,
            fetched_at: now,
        })
    }
}

/// Base credentials absent altogether (the chain found nothing to try).
#[derive(Debug)]
struct NoBaseCredentials;

impl ProvideCredentials for NoBaseCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::not_loaded(
                "no AWS credential source is configured (IRSA, Pod Identity or environment)",
            ),
        ))
    }
}

/// The EKS token for `cluster`: `k8s-aws-v1.` + base64url(presigned GetCallerIdentity URL).
pub fn presign_token(
    credentials: &Credentials,
    region: &str,
    sts_url: &url::Url,
    cluster: &str,
    now: SystemTime,
) -> Result<String, String> {
    let mut url = sts_url.clone();
    url.set_path("/");
    url.set_query(Some("Action=GetCallerIdentity&Version=2011-06-15"));
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGN_EXPIRES);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| format!("presigning the EKS token: {e}"))?
        .into();
    let headers = [(CLUSTER_ID_HEADER, cluster)];
    let signable = SignableRequest::new(
        "GET",
        url.as_str(),
        headers.iter().copied(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| format!("presigning the EKS token: {e}"))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| format!("presigning the EKS token: {e}"))?
        .into_parts();
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in instructions.params() {
            query.append_pair(name, value);
        }
    }
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url.as_str())
    ))
}

impl UpstreamCredential for EksCredential {
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, CredentialError>> {
        Box::pin(async move {
            self.cache
                .get()
                .await
                .map(Some)
                .map_err(|reason| CredentialError::Unavailable {
                    what: self.describe(),
                    reason,
                })
        })
    }

    fn describe(&self) -> String {
        let c = &self.inner.config;
        match &c.assume_role_arn {
            Some(role) => format!(
                "EKS token for cluster {:?} as role {role} (STS {})",
                c.cluster_name, self.inner.sts_url
            ),
            None => format!(
                "EKS token for cluster {:?} from the AWS default credential chain (STS {})",
                c.cluster_name, self.inner.sts_url
            ),
        }
    }

    fn rejected(&self, sent: Option<&HeaderValue>) {
        // A refused token is dropped and the next request presigns a new one, but not more
        // often than every few seconds: a role that is not mapped stays refused.
        if let Some(sent) = sent {
            tracing::warn!("the API server refused the EKS token (401); presigning a new one");
            self.cache.invalidate_if_older(sent, REPRESIGN_AFTER_REJECT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EksConfig {
        EksConfig {
            cluster_name: "prod-eu".into(),
            region: Some("eu-west-1".into()),
            sts_endpoint: None,
            assume_role_arn: Some("arn:aws:iam::111122223333:role/gatehouse-agent".into()),
            role_session_name: "gatehouse-agent".into(),
            external_id: None,
        }
    }

    #[test]
    fn token_is_a_presigned_get_caller_identity_bound_to_the_cluster()
    -> Result<(), Box<dyn std::error::Error>> {
        let creds = Credentials::new(
            "ASIAEXAMPLE",
            "secret",
            Some("session+/=".into()),
            None,
            "t",
        );
        let sts = url::Url::parse("https://sts.eu-west-1.amazonaws.com")?;
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = presign_token(&creds, "eu-west-1", &sts, "prod-eu", at)?;
        let b64 = token.strip_prefix(TOKEN_PREFIX).ok_or("prefix")?;
        assert!(!b64.contains('='), "no padding");
        let url = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64)?)?;
        let url = url::Url::parse(&url)?;
        assert_eq!(url.host_str(), Some("sts.eu-west-1.amazonaws.com"));
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["Action"], "GetCallerIdentity");
        assert_eq!(q["Version"], "2011-06-15");
        assert_eq!(q["X-Amz-Expires"], "60");
        assert_eq!(q["X-Amz-SignedHeaders"], "host;x-k8s-aws-id");
        assert_eq!(q["X-Amz-Date"], "20231114T221320Z");
        assert_eq!(q["X-Amz-Security-Token"], "session+/=");
        assert!(
            q["X-Amz-Credential"].starts_with("ASIAEXAMPLE/20231114/eu-west-1/sts/aws4_request")
        );
        assert_eq!(q["X-Amz-Signature"].len(), 64);
        assert!(!token.contains("secret"));
        // Another cluster name signs differently.
        let other = presign_token(&creds, "eu-west-1", &sts, "staging", at)?;
        assert_ne!(token, other);
        Ok(())
    }

    #[test]
    fn settings_are_checked_up_front() {
        let none = |_: &str| None;
        assert!(EksCredential::new(&config(), none).is_ok());
        let mut c = config();
        c.region = None;
        let err = EksCredential::new(&c, none).err().unwrap_or_default();
        assert!(err.contains("--aws-region"), "{err}");
        assert!(
            EksCredential::new(&c, |k: &str| (k == "AWS_REGION")
                .then(|| "us-east-1".into()))
            .is_ok()
        );
        let mut c = config();
        c.cluster_name = " ".into();
        assert!(EksCredential::new(&c, none).is_err());
        let mut c = config();
        c.assume_role_arn = None;
        c.external_id = Some("x".into());
        assert!(EksCredential::new(&c, none).is_err());
        let mut c = config();
        c.sts_endpoint = Some("ftp://sts".into());
        assert!(EksCredential::new(&c, none).is_err());
    }

    #[test]
    fn describe_never_holds_a_secret() {
        let d = EksCredential::new(&config(), |_: &str| None)
            .map(|c| c.describe())
            .unwrap_or_default();
        assert!(
            d.contains("prod-eu") && d.contains("role/gatehouse-agent"),
            "{d}"
        );
    }
}
