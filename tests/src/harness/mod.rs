//! Test harness: free loopback ports, kubeconfigs, real kubectl, stack launchers.
//!
//! # Layout
//! - [`ports`]: free loopback ports.
//! - [`kubeconfig`]: writes kubeconfig files for tokens, client certificates, exec plugins.
//! - [`kubectl`]: runs the real kubectl binaries (1.32 and Debian's 1.20), also in a pty.
//! - [`tools`]: where the external binaries the tests drive are installed.
//! - [`stack`]: the whole local stack (emulator, OIDC issuer, collector, agent) for
//!   `dev-stack` and end-to-end tests.

pub mod kubeconfig;
pub mod kubectl;
pub mod ports;
pub mod stack;
pub mod tools;
