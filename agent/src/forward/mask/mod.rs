//! The mask phase of the response path: which profile applies to a request, the `Accept`
//! rewrite that makes the API server answer JSON, and masking of the response — bounded
//! bodies buffered and masked whole, watches and logs masked as they stream.

pub mod body;

use crate::Body;
use crate::audit::RequestContext;
use crate::status::ProxyError;
use body::{Gunzip, MaskedBody, Masker};
use bytes::Bytes;
use gatehouse_common::mask::{
    JsonStreamMasker, MaskError, Profile, ProfileSet, ProfilesFile, TextMasker,
};
use http::header::{ACCEPT, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::{BodyExt, Full};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Profile name that turns masking off (for `--default-mask-profile` or a policy rule).
pub const NO_MASKING: &str = "none";

/// Masking settings.
#[derive(Debug, Clone)]
pub struct MaskConfig {
    /// YAML file of named profiles; the built-in `default` alone when unset.
    pub profiles_file: Option<PathBuf>,
    /// Profile for requests whose policy rule names none (`none`: no masking).
    pub default_profile: String,
    /// Largest non-streaming response body masked (after decompression); larger ones are
    /// refused, never sent unmasked.
    pub body_limit: usize,
}

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            profiles_file: None,
            default_profile: gatehouse_common::mask::profile::DEFAULT_PROFILE.to_string(),
            body_limit: 64 << 20,
        }
    }
}

/// Errors loading the masking profiles.
#[derive(Debug, thiserror::Error)]
pub enum MaskSetupError {
    /// The profile file cannot be read.
    #[error("reading mask profiles {0:?}")]
    Read(PathBuf, #[source] std::io::Error),
    /// The profile file is not valid YAML of the expected shape.
    #[error("parsing mask profiles {0:?}: {1}")]
    Parse(PathBuf, String),
    /// A profile does not compile, or the default names no profile.
    #[error("mask profiles {0:?}")]
    Invalid(String, #[source] MaskError),
}

/// Compiled profiles plus the settings every request shares.
#[derive(Debug)]
pub struct Masking {
    profiles: ProfileSet,
    default_profile: String,
    body_limit: usize,
}

impl Masking {
    /// Loads and checks `config` (the default profile must exist).
    pub fn load(config: &MaskConfig) -> Result<Self, MaskSetupError> {
        let file = match &config.profiles_file {
            Some(path) => read_profiles(path)?,
            None => ProfilesFile::default(),
        };
        let source = config
            .profiles_file
            .as_deref()
            .map_or_else(|| "built-in".to_string(), |p| p.display().to_string());
        let profiles =
            ProfileSet::from_file(&file).map_err(|e| MaskSetupError::Invalid(source.clone(), e))?;
        if config.default_profile != NO_MASKING {
            profiles
                .get(&config.default_profile)
                .map_err(|e| MaskSetupError::Invalid(source, e))?;
        }
        Ok(Self {
            profiles,
            default_profile: config.default_profile.clone(),
            body_limit: config.body_limit,
        })
    }

    /// The profile for a request whose rule named `requested` (`None`: the default);
    /// `None` when masking is off for it. An unknown name is an error: fail closed.
    pub fn profile_for(&self, requested: Option<&str>) -> Result<Option<Arc<Profile>>, MaskError> {
        match requested.unwrap_or(&self.default_profile) {
            NO_MASKING => Ok(None),
            name => self.profiles.get(name).map(Some),
        }
    }

    /// How `ctx`'s response is masked, if it is. Upgraded sessions are masked by the
    /// session taps; non-resource paths (discovery, OpenAPI, version, health) carry no API
    /// objects and are left alone.
    pub fn plan(&self, ctx: &RequestContext) -> Result<Option<Plan>, ProxyError> {
        let Some(info) = &ctx.info else {
            return Ok(None);
        };
        if !info.is_resource_request
            || crate::audit::event::session_kind(ctx).is_some()
            || ctx.method == http::Method::HEAD
        {
            return Ok(None);
        }
        let profile = self.profile_for(ctx.mask_profile.as_deref()).map_err(|e| {
            ProxyError::Internal(format!("gatehouse cannot mask this response: {e}"))
        })?;
        Ok(profile.map(|profile| Plan {
            profile,
            streaming: info.is_long_lived_stream(),
            limit: self.body_limit,
        }))
    }
}

fn read_profiles(path: &Path) -> Result<ProfilesFile, MaskSetupError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| MaskSetupError::Read(path.to_path_buf(), e))?;
    serde_saphyr::from_str(&text)
        .map_err(|e| MaskSetupError::Parse(path.to_path_buf(), e.to_string()))
}

/// Masking of one request's response.
#[derive(Debug)]
pub struct Plan {
    profile: Arc<Profile>,
    /// A watch or followed log: mask as it streams.
    streaming: bool,
    limit: usize,
}

impl Plan {
    /// Asks the API server for JSON: protobuf (and YAML, CBOR) cannot be masked by
    /// field. A client that accepts only protobuf still gets JSON — every Kubernetes
    /// client decodes JSON, and an unmasked protobuf answer is not an option.
    pub fn prepare_request(&self, headers: &mut HeaderMap) {
        let accept = json_only_accept(headers);
        headers.insert(ACCEPT, accept);
    }

    /// Masks `resp`. Bounded bodies are buffered and masked whole (errors become a clear
    /// `Status`); watches and logs are masked chunk by chunk (errors cut the stream).
    pub async fn respond(self, resp: Response<Body>) -> Result<Response<Body>, ProxyError> {
        let (mut parts, body) = resp.into_parts();
        let content_type = header_str(&parts.headers, CONTENT_TYPE).to_ascii_lowercase();
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let gunzip = match header_str(&parts.headers, CONTENT_ENCODING).trim() {
            "" | "identity" => None,
            "gzip" | "x-gzip" => Some(Gunzip::new(self.limit)),
            other => {
                return Err(refused(format!(
                    "the API server answered with content encoding {other:?}, which gatehouse cannot decode"
                )));
            }
        };
        let json = media == "application/json" || media.ends_with("+json");
        let text = media.is_empty() || media.starts_with("text/");
        let masker = if json {
            Masker::Json(JsonStreamMasker::new(self.profile.clone(), self.limit))
        } else if text {
            match &self.profile.text {
                Some(detectors) => Masker::Text(Box::new(TextMasker::new(detectors.clone()))),
                // Nothing to look for in text: send it as it is.
                None => return Ok(Response::from_parts(parts, body)),
            }
        } else {
            return Err(refused(format!(
                "the API server answered {media:?}, which gatehouse cannot mask"
            )));
        };
        parts.headers.remove(CONTENT_LENGTH);
        if gunzip.is_some() {
            parts.headers.remove(CONTENT_ENCODING);
        }
        if self.streaming || matches!(masker, Masker::Text(_)) {
            let body = MaskedBody::new(body, gunzip, masker).boxed();
            return Ok(Response::from_parts(parts, body));
        }
        let masked = buffer_and_mask(body, gunzip, masker, self.limit).await?;
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(masked.len()));
        let body = Full::new(masked).map_err(|never| match never {}).boxed();
        Ok(Response::from_parts(parts, body))
    }
}

async fn buffer_and_mask(
    mut body: Body,
    gunzip: Option<Gunzip>,
    masker: Masker,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    let mut raw = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ProxyError::UpstreamUnavailable(format!(
                "gatehouse lost the API server's response: {e}"
            ))
        })?;
        if let Ok(data) = frame.into_data() {
            if raw.len() + data.len() > limit {
                return Err(refused(format!(
                    "the response is larger than the masking limit of {limit} bytes (--mask-body-limit)"
                )));
            }
            raw.extend_from_slice(&data);
        }
    }
    body::mask_whole(&raw, gunzip, masker)
        .map(Bytes::from)
        .map_err(|e| refused(crate::authenticate::jwks::error_chain(&e)))
}

fn refused(reason: String) -> ProxyError {
    ProxyError::Internal(format!(
        "gatehouse masks this response and could not: {reason}; nothing was sent unmasked"
    ))
}

fn header_str(headers: &HeaderMap, name: http::header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The client's `Accept` with every non-JSON media range removed (wildcards stay: the
/// API server answers them with JSON); `application/json` when nothing is left.
fn json_only_accept(headers: &HeaderMap) -> HeaderValue {
    let kept: Vec<&str> = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|range| {
            let media = range
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            media == "application/json" || media == "*/*" || media == "application/*"
        })
        .collect();
    if kept.is_empty() {
        return HeaderValue::from_static("application/json");
    }
    HeaderValue::from_str(&kept.join(",")).unwrap_or(HeaderValue::from_static("application/json"))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> String {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        json_only_accept(&h).to_str().unwrap().to_string()
    }

    #[test]
    fn accept_keeps_json_and_drops_protobuf() {
        assert_eq!(
            accept(&["application/vnd.kubernetes.protobuf,application/json"]),
            "application/json"
        );
        assert_eq!(
            accept(&[
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json"
            ]),
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        );
        assert_eq!(
            accept(&["application/vnd.kubernetes.protobuf"]),
            "application/json"
        );
        assert_eq!(accept(&[]), "application/json");
        assert_eq!(accept(&["*/*"]), "*/*");
        assert_eq!(
            accept(&["application/yaml", "application/cbor"]),
            "application/json"
        );
    }

    fn ctx(method: http::Method, path: &str) -> RequestContext {
        let req = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .body(())
            .unwrap();
        let mut ctx = RequestContext::new(&req, "127.0.0.1:1".parse().unwrap());
        let uri: http::Uri = path.parse().unwrap();
        ctx.info = Some(crate::classify::classify(&method, uri.path(), uri.query()).unwrap());
        ctx
    }

    #[test]
    fn plans_cover_resource_reads_and_skip_discovery_sessions_and_head() {
        let masking = Masking::load(&MaskConfig::default()).unwrap();
        let plan = |m: http::Method, p: &str| masking.plan(&ctx(m, p)).unwrap();
        let get = http::Method::GET;
        assert!(plan(get.clone(), "/api/v1/namespaces/prod/secrets/db").is_some());
        let watch = plan(get.clone(), "/api/v1/secrets?watch=true").unwrap();
        assert!(watch.streaming);
        let logs = plan(get.clone(), "/api/v1/namespaces/dev/pods/p/log?follow=true").unwrap();
        assert!(logs.streaming);
        assert!(plan(get.clone(), "/api/v1/namespaces/dev/pods/p/exec?command=sh").is_none());
        assert!(plan(get.clone(), "/openapi/v2").is_none());
        assert!(plan(get, "/version").is_none());
        assert!(plan(http::Method::HEAD, "/api/v1/secrets").is_none());
        // A rule naming an unknown profile fails closed.
        let mut c = ctx(http::Method::GET, "/api/v1/secrets");
        c.mask_profile = Some("missing".into());
        assert!(masking.plan(&c).is_err());
        c.mask_profile = Some(NO_MASKING.into());
        assert!(masking.plan(&c).unwrap().is_none());
    }

    #[test]
    fn an_unknown_default_profile_is_refused_at_startup() {
        let config = MaskConfig {
            default_profile: "strict".into(),
            ..MaskConfig::default()
        };
        let err = Masking::load(&config).unwrap_err();
        assert!(err.to_string().contains("built-in"), "{err}");
        let masking = Masking::load(&MaskConfig::default()).unwrap();
        assert!(masking.profile_for(None).unwrap().is_some());
        assert!(masking.profile_for(Some(NO_MASKING)).unwrap().is_none());
        assert!(masking.profile_for(Some("nope")).is_err());
    }
}
