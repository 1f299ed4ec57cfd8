//! Authentication as the API server does it: x509 client certificates (CN = user,
//! O = groups; verified against the emulator's CA by the TLS layer) and bearer tokens
//! from an in-memory token table.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

/// An authenticated (or impersonated) user, as `user.Info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// User name.
    pub username: String,
    /// UID (may be empty).
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with a name and groups.
    pub fn new(username: &str, groups: &[&str]) -> Self {
        Self {
            username: username.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: BTreeMap::new(),
        }
    }

    /// `system:masters` bypasses authorization, as on a real server.
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// The admin user every seeded emulator has.
pub fn admin_user() -> UserInfo {
    UserInfo::new(
        "emulator-admin",
        &["system:masters", "system:authenticated"],
    )
}

/// The Gatehouse agent's service account.
pub fn agent_user() -> UserInfo {
    UserInfo {
        uid: uuid::Uuid::new_v4().to_string(),
        ..UserInfo::new(
            "system:serviceaccount:gatehouse:gatehouse-agent",
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:gatehouse",
                "system:authenticated",
            ],
        )
    }
}

/// Token → user.
#[derive(Debug, Default)]
pub struct TokenTable {
    tokens: RwLock<HashMap<String, UserInfo>>,
}

impl TokenTable {
    /// Adds or replaces a token.
    pub fn add(&self, token: &str, user: UserInfo) {
        if let Ok(mut map) = self.tokens.write() {
            map.insert(token.to_string(), user);
        }
    }

    /// The user for an `Authorization` header value, if it carries a known bearer token.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<UserInfo> {
        let value = authorization?.trim();
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut user = self.tokens.read().ok()?.get(token.trim()).cloned()?;
        // The API server adds this group to every authenticated user.
        if !user.groups.iter().any(|g| g == "system:authenticated") {
            user.groups.push("system:authenticated".into());
        }
        Some(user)
    }
}

/// The verified client certificate of a connection, put into each request's extensions
/// by the TLS server.
#[derive(Debug, Clone)]
pub struct ClientCertUser(pub UserInfo);

/// The user a verified client certificate names: CN = user name, each O = a group (as
/// kube-apiserver's x509 authenticator). `None` if the certificate has no CN.
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let username = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    if username.is_empty() {
        return None;
    }
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".into());
    Some(UserInfo {
        username,
        uid: String::new(),
        groups,
        extra: BTreeMap::new(),
    })
}

/// A random token (hex), for the admin and agent identities.
pub fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn bearer_tokens() {
        let table = TokenTable::default();
        table.add("abc", admin_user());
        assert_eq!(
            table.authenticate(Some("Bearer abc")).map(|u| u.username),
            Some("emulator-admin".to_string())
        );
        assert!(table.authenticate(Some("Bearer nope")).is_none());
        assert!(table.authenticate(Some("Basic abc")).is_none());
        assert!(table.authenticate(None).is_none());
    }

    #[test]
    fn client_certificates_name_user_and_groups() -> anyhow::Result<()> {
        let ca = crate::pki::Ca::new("ca")?;
        // One group: rcgen keeps a single value per subject attribute type.
        let leaf = ca.issue_client("agent-mtls", &["gatehouse:agents"])?;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes())?;
        let user = user_from_certificate(&der).ok_or_else(|| anyhow::anyhow!("no user"))?;
        assert_eq!(user.username, "agent-mtls");
        assert_eq!(
            user.groups,
            vec!["gatehouse:agents", "system:authenticated"]
        );
        assert!(user_from_certificate(b"garbage").is_none());
        Ok(())
    }
}
