//! What the streams of a Kubernetes exec/attach/port-forward session mean: the
//! remotecommand channel numbers, the error channel's `v1.Status` (exit code) and the
//! resize channel's terminal sizes.

use serde::Deserialize;

/// The role of a stream, whatever wire carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Channel 0 / `streamtype: stdin`.
    Stdin,
    /// Channel 1 / `stdout`.
    Stdout,
    /// Channel 2 / `stderr`.
    Stderr,
    /// Channel 3 / `error`: the final `v1.Status` (or plain text before v4).
    Error,
    /// Channel 4 / `resize`: `{"Width":W,"Height":H}` objects.
    Resize,
    /// Port-forward payload of a port.
    PortData(u16),
    /// Port-forward error stream of a port.
    PortError(u16),
    /// Anything else (not recorded).
    Other,
}

impl Route {
    /// The remotecommand WebSocket channel `n`.
    pub fn from_channel(n: u8) -> Self {
        match n {
            0 => Self::Stdin,
            1 => Self::Stdout,
            2 => Self::Stderr,
            3 => Self::Error,
            4 => Self::Resize,
            _ => Self::Other,
        }
    }

    /// A SPDY exec/attach stream's `streamtype` header.
    pub fn from_stream_type(t: &str) -> Self {
        match t.to_ascii_lowercase().as_str() {
            "stdin" => Self::Stdin,
            "stdout" => Self::Stdout,
            "stderr" => Self::Stderr,
            "error" => Self::Error,
            "resize" => Self::Resize,
            _ => Self::Other,
        }
    }
}

/// The v5 "close channel" pseudo-channel: a message `[255, n]` ends channel `n`.
pub const CLOSE_CHANNEL: u8 = 255;

/// Largest error/resize stream content kept (both are small JSON documents).
pub const MAX_CONTROL_STREAM: usize = 64 << 10;

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    status: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    causes: Vec<Cause>,
}

#[derive(Deserialize)]
struct Cause {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// The exit code in an error-channel `v1.Status`: 0 for `Success`, the `ExitCode` cause
/// of a `NonZeroExitCode` failure; `None` for other failures or unparsable content.
pub fn exit_code(status_json: &[u8]) -> Option<i32> {
    let status: Status = serde_json::from_slice(status_json).ok()?;
    if status.status == "Success" {
        return Some(0);
    }
    if status.reason != "NonZeroExitCode" {
        return None;
    }
    status
        .details?
        .causes
        .iter()
        .find(|c| c.reason == "ExitCode")
        .and_then(|c| c.message.trim().parse().ok())
}

/// A terminal size from the resize channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TermSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Splits the resize stream into sizes as its JSON objects complete (they may arrive
/// split across frames); bounded: junk beyond [`MAX_CONTROL_STREAM`] is dropped.
#[derive(Debug, Default)]
pub struct ResizeReader {
    buf: Vec<u8>,
}

impl ResizeReader {
    /// Adds bytes; returns the sizes completed by them.
    pub fn push(&mut self, data: &[u8]) -> Vec<TermSize> {
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<TermSize>();
        let mut used = 0;
        loop {
            match stream.next() {
                Some(Ok(size)) => {
                    sizes.push(size);
                    used = stream.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                // Not a size: skip what was read so one bad object cannot stall the rest.
                Some(Err(_)) => {
                    used = self.buf.len();
                    break;
                }
                None => {
                    used = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..used);
        if self.buf.len() > MAX_CONTROL_STREAM {
            self.buf.clear();
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_from_status() {
        assert_eq!(exit_code(br#"{"metadata":{},"status":"Success"}"#), Some(0));
        let failed = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(exit_code(failed), Some(3));
        assert_eq!(
            exit_code(br#"{"status":"Failure","reason":"InternalError"}"#),
            None
        );
        assert_eq!(exit_code(b"not json"), None);
    }

    #[test]
    fn resize_objects_split_anywhere() {
        let mut r = ResizeReader::default();
        assert!(r.push(br#"{"Width":1"#).is_empty());
        assert_eq!(
            r.push(b"00,\"Height\":30}\n{\"Width\":80,\"Height\":24}"),
            vec![
                TermSize {
                    width: 100,
                    height: 30
                },
                TermSize {
                    width: 80,
                    height: 24
                }
            ]
        );
        assert!(r.push(b"garbage").is_empty());
        assert_eq!(
            r.push(br#"{"Width":5,"Height":6}"#),
            vec![TermSize {
                width: 5,
                height: 6
            }]
        );
    }
}
