//! SigV4 verification of a presigned (query-string) GET, written from the AWS
//! specification and independent of the agent's signer (`aws-sigv4`), so a signing bug
//! on either side shows as a refused token.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

type HmacSha256 = Hmac<Sha256>;

/// The parts of a presigned URL's query the verifier needs.
#[derive(Debug, Clone)]
pub struct Presigned {
    /// Every query parameter, decoded.
    pub params: Vec<(String, String)>,
    /// `X-Amz-Credential`'s access key id.
    pub access_key_id: String,
    /// `date/region/service/aws4_request`.
    pub scope: String,
    /// `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`).
    pub amz_date: String,
    /// Lower-case signed header names.
    pub signed_headers: Vec<String>,
    /// `X-Amz-Signature`.
    pub signature: String,
}

impl Presigned {
    /// Picks the SigV4 parameters out of a decoded query.
    pub fn parse(params: Vec<(String, String)>) -> Result<Self, String> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("missing {name}"))
        };
        if get("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" {
            return Err("unsupported X-Amz-Algorithm".into());
        }
        let credential = get("X-Amz-Credential")?;
        let (access_key_id, scope) = credential
            .split_once('/')
            .ok_or("malformed X-Amz-Credential")?;
        Ok(Self {
            access_key_id: access_key_id.to_string(),
            scope: scope.to_string(),
            amz_date: get("X-Amz-Date")?,
            signed_headers: get("X-Amz-SignedHeaders")?
                .split(';')
                .map(str::to_string)
                .collect(),
            signature: get("X-Amz-Signature")?,
            params,
        })
    }

    /// The signature this request should carry when signed with `secret`; `header`
    /// looks up a request header by lower-case name.
    pub fn expected_signature(
        &self,
        method: &str,
        path: &str,
        header: impl Fn(&str) -> Option<String>,
        secret: &str,
    ) -> Result<String, String> {
        let mut query: Vec<(String, String)> = self
            .params
            .iter()
            .filter(|(k, _)| k != "X-Amz-Signature")
            .map(|(k, v)| (uri_encode(k), uri_encode(v)))
            .collect();
        query.sort();
        let canonical_query = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let mut headers = BTreeMap::new();
        for name in &self.signed_headers {
            let value = header(name).ok_or_else(|| format!("signed header {name} not sent"))?;
            headers.insert(name.clone(), value.trim().to_string());
        }
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let canonical_request = format!(
            "{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{}\n{}",
            self.signed_headers.join(";"),
            hex(&Sha256::digest(b""))
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{}\n{}",
            self.amz_date,
            self.scope,
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let mut parts = self.scope.split('/');
        let (date, region, service) = match (parts.next(), parts.next(), parts.next()) {
            (Some(d), Some(r), Some(s)) => (d, r, s),
            _ => return Err("malformed credential scope".into()),
        };
        let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes())?;
        let k_region = hmac(&k_date, region.as_bytes())?;
        let k_service = hmac(&k_region, service.as_bytes())?;
        let k_signing = hmac(&k_service, b"aws4_request")?;
        Ok(hex(&hmac(&k_signing, string_to_sign.as_bytes())?))
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    let mut mac = HmacSha256::new_from_slice(key).map_err(|e| e.to_string())?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters as they are, every other
/// byte `%XX` (upper-case hex).
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // AWS's "deriving the signing key" example (SigV4 documentation).
    #[test]
    fn aws_documented_signing_key() -> Result<(), String> {
        let key = {
            let k_date = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", b"20120215")?;
            let k_region = hmac(&k_date, b"us-east-1")?;
            let k_service = hmac(&k_region, b"iam")?;
            hmac(&k_service, b"aws4_request")?
        };
        assert_eq!(
            hex(&key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
        assert_eq!(uri_encode("a b/+="), "a%20b%2F%2B%3D");
        Ok(())
    }
}
