//! A real STS for the EKS tests: moto's server on loopback ([`moto`]) behind a front
//! ([`front`]) that counts calls per action, can play an outage, and verifies SigV4
//! presigned `GetCallerIdentity` URLs ([`sigv4`]) as real STS does and moto does not
//! (moto ignores query-string signatures and would answer every presigned URL as the
//! same default user).

pub mod front;
pub mod moto;
pub mod sigv4;

pub use front::StsFront;
pub use moto::Moto;
