//! Bearer-token authentication against an in-memory token table.

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

/// A random token (hex), for the admin and agent identities.
pub fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
