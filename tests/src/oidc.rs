//! Local OpenID Connect issuer for tests and the dev stack.
