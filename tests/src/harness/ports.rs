//! Free loopback ports for servers started by tests.

use std::net::{SocketAddr, TcpListener};

/// A loopback address with a port that was free a moment ago.
///
/// Prefer binding `127.0.0.1:0` directly where the server allows it; this is for
/// external programs that need a port number on their command line.
pub fn free_loopback_addr() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.local_addr()
}
