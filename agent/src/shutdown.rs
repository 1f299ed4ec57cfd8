//! The future that resolves when the process is asked to stop (SIGINT or SIGTERM).

/// Resolves on the first SIGINT or SIGTERM. If the handlers cannot be installed the
/// future never resolves (the process can still be killed) and the error is logged.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(error = %err, "cannot install signal handlers");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}
