//! The agent's key store against the real test issuer over HTTPS: an explicit refresh
//! loads the keys, and a refresh that fails (issuer gone) keeps the last good ones.

use gatehouse_agent::authenticate::jwks::KeyStore;
use gatehouse_tests::harness::stack::dev_users;
use gatehouse_tests::oidc::OidcIssuer;
use gatehouse_tests::pki::Ca;
use jsonwebtoken::Algorithm;
use std::time::Duration;

#[tokio::test]
async fn failed_refresh_keeps_the_last_good_keys() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("jwks-test-ca")?;
    let ca_path = dir.path().join("ca.crt");
    ca.write_cert(&ca_path)?;
    let issuer = OidcIssuer::start(dev_users(), &ca).await?;
    let tls = gatehouse_agent::tls::client_config(Some(&ca_path))?;
    let keys = KeyStore::remote(issuer.issuer_url(), tls, Duration::from_secs(10));
    assert!(!keys.loaded().await);

    assert_eq!(keys.refresh_now().await?, 1);
    assert!(keys.loaded().await);
    let token = issuer.mint("alice", &["engineers"], Duration::from_secs(60))?;
    let kid = jsonwebtoken::decode_header(&token)?.kid;
    assert_eq!(
        keys.candidates(kid.as_deref(), Algorithm::ES256)
            .await?
            .len(),
        1
    );

    issuer.shutdown().await;
    assert!(
        keys.refresh_now().await.is_err(),
        "refresh from a stopped issuer succeeded"
    );
    // Still the same key: an IdP outage must not lock users out.
    assert_eq!(
        keys.candidates(kid.as_deref(), Algorithm::ES256)
            .await?
            .len(),
        1
    );
    Ok(())
}
