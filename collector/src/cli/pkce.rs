//! PKCE (RFC 7636) S256 verifier/challenge generation and the OAuth `state` value for `gatehouse login`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// A PKCE pair: the secret verifier kept by the CLI and the S256 challenge sent in `/authorize`.
#[derive(Debug, Clone)]
pub struct Pkce {
    /// Secret sent only to the token endpoint.
    pub verifier: String,
    /// S256 challenge sent to the authorization endpoint.
    pub challenge: String,
}

impl Pkce {
    /// 32 random bytes give a 43-character verifier, the RFC 7636 minimum length.
    pub fn generate() -> Self {
        let verifier = random_token(32);
        let challenge = challenge_s256(&verifier);
        Self {
            verifier,
            challenge,
        }
    }
}

/// `BASE64URL(SHA256(ASCII(verifier)))` without padding (RFC 7636 section 4.2).
pub fn challenge_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// An unguessable URL-safe token (used for `state`).
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_vector() {
        assert_eq!(
            challenge_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn generated_pair_is_consistent_and_unique() {
        let a = Pkce::generate();
        let b = Pkce::generate();
        assert_eq!(a.verifier.len(), 43);
        assert_eq!(challenge_s256(&a.verifier), a.challenge);
        assert_ne!(a.verifier, b.verifier);
    }
}
