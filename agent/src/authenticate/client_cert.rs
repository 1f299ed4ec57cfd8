//! Client-certificate identity: a certificate the listener verified against
//! `--client-ca-file` maps to a user like at the API server (CN = user, O = groups).

use super::Identity;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

pub use gatehouse_common::oidc::ClientCertIdentity;

/// Why a verified certificate still gives no identity.
#[derive(Debug, thiserror::Error)]
pub enum ClientCertError {
    /// The DER could not be parsed (rustls verified it, so this is unexpected).
    #[error("client certificate cannot be parsed")]
    Parse,
    /// No Common Name, so no user name.
    #[error("client certificate has no subject common name")]
    NoCommonName,
    /// The CN is in the API server's reserved `system:` namespace.
    #[error("client certificate user {0:?} is reserved for Kubernetes system identities")]
    Reserved(String),
}

/// Maps the leaf certificate to an [`Identity`]. `system:` users are refused and `system:`
/// groups dropped, so a client CA can never mint e.g. `system:masters`.
pub fn identity_from_cert(leaf: &CertificateDer<'_>) -> Result<Identity, ClientCertError> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|_| ClientCertError::Parse)?;
    let subject = cert.subject();
    let username = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or(ClientCertError::NoCommonName)?
        .to_string();
    if username.starts_with("system:") {
        return Err(ClientCertError::Reserved(username));
    }
    let mut groups: Vec<String> = Vec::new();
    for org in subject.iter_organization() {
        let Ok(group) = org.as_str() else { continue };
        if group.is_empty() || group.starts_with("system:") || groups.iter().any(|g| g == group) {
            continue;
        }
        groups.push(group.to_string());
    }
    let expires_at = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Ok(Identity {
        username,
        groups,
        expires_at,
        auth_method: gatehouse_common::audit::AuthMethod::ClientCertificate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert(cn: Option<&str>, orgs: &[&str]) -> Result<CertificateDer<'static>, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        for org in orgs {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *org);
        }
        Ok(params.self_signed(&key)?.der().clone())
    }

    #[test]
    fn cn_is_user_and_o_are_groups() -> Result<(), Box<dyn std::error::Error>> {
        // rcgen keeps one value per attribute type, so one O per certificate here.
        let id = identity_from_cert(&cert(Some("carol"), &["sre"])?)?;
        assert_eq!(id.username, "carol");
        assert_eq!(id.groups, vec!["sre".to_string()]);
        assert!(id.expires_at > 0);
        let id = identity_from_cert(&cert(Some("carol"), &["system:masters"])?)?;
        assert!(id.groups.is_empty(), "{:?}", id.groups);
        Ok(())
    }

    #[test]
    fn missing_or_reserved_cn_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        assert!(matches!(
            identity_from_cert(&cert(None, &["sre"])?),
            Err(ClientCertError::NoCommonName)
        ));
        assert!(matches!(
            identity_from_cert(&cert(Some("system:admin"), &[])?),
            Err(ClientCertError::Reserved(_))
        ));
        Ok(())
    }
}
