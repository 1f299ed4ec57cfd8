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

/// Resolves on SIGINT or SIGTERM (Ctrl-C alone where signals can't be installed): how
/// the stack launchers (`dev-stack`, `bench-stack`) know to stop.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
