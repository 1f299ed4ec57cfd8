//! Port-forward metadata: which ports, how many connections, bytes each way. No payload
//! is kept. Over WebSocket (`portforward.k8s.io`) port `i` uses data channel `2i` and error
//! channel `2i+1`, each starting with the port number (2 bytes, little endian).

use gatehouse_common::audit::PortForwardStats;
use std::collections::{BTreeMap, HashMap};

/// Most ports one session may forward (kubectl takes them from its command line).
const MAX_PORTS: usize = 256;

/// Counters of one session.
#[derive(Debug, Default)]
pub struct PortStats {
    ports: BTreeMap<u16, PortForwardStats>,
    /// WebSocket: per channel, the port once its 2-byte prefix is read (or its first byte).
    channels: HashMap<u8, (Option<u16>, Option<u8>)>,
}

impl PortStats {
    fn entry(&mut self, port: u16) -> Option<&mut PortForwardStats> {
        if !self.ports.contains_key(&port) && self.ports.len() >= MAX_PORTS {
            return None;
        }
        Some(self.ports.entry(port).or_insert_with(|| PortForwardStats {
            port,
            ..PortForwardStats::default()
        }))
    }

    /// A data connection to `port` opened.
    pub fn opened(&mut self, port: u16) {
        if let Some(e) = self.entry(port) {
            e.connections += 1;
        }
    }

    /// `n` payload bytes to or from `port`.
    pub fn bytes(&mut self, port: u16, from_client: bool, n: usize) {
        if let Some(e) = self.entry(port) {
            if from_client {
                e.bytes_from_client += n as u64;
            } else {
                e.bytes_to_client += n as u64;
            }
        }
    }

    /// WebSocket channel payload: strips and reads each channel's port prefix, counts the
    /// rest on the data channels.
    pub fn websocket(&mut self, channel: u8, from_client: bool, mut data: &[u8]) {
        let state = self.channels.entry(channel).or_insert((None, None));
        if state.0.is_none() {
            while state.0.is_none() && !data.is_empty() {
                match state.1 {
                    None => state.1 = Some(data[0]),
                    Some(lo) => state.0 = Some(u16::from_le_bytes([lo, data[0]])),
                }
                data = &data[1..];
            }
            if let (Some(port), true) = (state.0, channel.is_multiple_of(2)) {
                self.opened(port);
            }
        }
        let Some(port) = self.channels.get(&channel).and_then(|s| s.0) else {
            return;
        };
        if channel.is_multiple_of(2) && !data.is_empty() {
            self.bytes(port, from_client, data.len());
        }
    }

    /// The per-port summary.
    pub fn summary(&self) -> Vec<PortForwardStats> {
        self.ports.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_prefixes_name_the_port_and_only_data_is_counted() {
        let mut s = PortStats::default();
        s.websocket(0, false, &[0x90]);
        s.websocket(0, false, &[0x1f, b'a']); // port 8080
        s.websocket(1, false, &[0x90, 0x1f]);
        s.websocket(0, true, b"GET /");
        s.websocket(1, false, b"error text");
        s.websocket(0, false, b"HTTP/1.1 200");
        assert_eq!(
            s.summary(),
            vec![PortForwardStats {
                port: 8080,
                connections: 1,
                bytes_from_client: 5,
                bytes_to_client: 13,
            }]
        );
    }
}
