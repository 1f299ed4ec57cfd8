//! asciicast v2 writer: the header line and `o`/`i`/`r` event lines with times relative to
//! the session start, cut into chunks of at most [`CHUNK_BYTES`] or [`CHUNK_AGE`].
//!
//! asciicast text is JSON, so output is UTF-8: a character split across frames is
//! joined (up to 3 bytes are held), and invalid bytes become U+FFFD, as asciinema does.

use super::remotecommand::TermSize;
use serde::Serialize;
use std::time::{Duration, Instant};

/// A chunk is cut once it holds this many bytes...
pub const CHUNK_BYTES: usize = 64 << 10;
/// ...or its first line is this old (checked when the next line is written).
pub const CHUNK_AGE: Duration = Duration::from_secs(1);
/// Bytes of one stream per event line (so one line stays well below a chunk).
const LINE_BYTES: usize = 16 << 10;

/// What the header says about the session (under the `gatehouse` key).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id.
    pub session_id: String,
    /// Username.
    pub user: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container (empty = default).
    pub container: String,
    /// Command of an exec (empty for attach).
    pub command: Vec<String>,
    /// Whether a tty was requested.
    pub tty: bool,
    /// Cluster name.
    pub cluster: String,
}

#[derive(Serialize)]
struct Header<'a> {
    version: u8,
    width: u16,
    height: u16,
    timestamp: i64,
    env: Env,
    title: String,
    gatehouse: &'a SessionInfo,
}

#[derive(Serialize)]
struct Env {
    #[serde(rename = "TERM")]
    term: &'static str,
    #[serde(rename = "SHELL")]
    shell: String,
}

/// Which event line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Output (stdout and stderr).
    Output,
    /// Input (stdin).
    Input,
}

/// A cut chunk: `seq` 0 is the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the recording.
    pub seq: u64,
    /// `header` or `events`.
    pub stream: &'static str,
    /// Whole lines.
    pub data: String,
}

/// UTF-8 decoding that carries an incomplete trailing character to the next call.
#[derive(Debug, Default)]
struct Utf8Carry(Vec<u8>);

impl Utf8Carry {
    fn decode(&mut self, data: &[u8], out: &mut String) {
        self.0.extend_from_slice(data);
        let mut rest: &[u8] = &self.0;
        let mut keep = 0;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{fffd}');
                            rest = &bad[n..];
                        }
                        None => {
                            keep = bad.len();
                            break;
                        }
                    }
                }
            }
        }
        let start = self.0.len() - keep;
        self.0.drain(..start);
    }

    fn flush(&mut self, out: &mut String) {
        if !self.0.is_empty() {
            out.push_str(&String::from_utf8_lossy(&self.0));
            self.0.clear();
        }
    }
}

/// Writes one session's recording.
#[derive(Debug)]
pub struct CastWriter {
    info: SessionInfo,
    started: Instant,
    started_wall: chrono::DateTime<chrono::Utc>,
    size: Option<TermSize>,
    header_cut: bool,
    lines: String,
    first_line_at: Option<Instant>,
    seq: u64,
    /// Carries of stdout, stderr, stdin.
    carry: [Utf8Carry; 3],
    text: String,
}

impl CastWriter {
    /// A recording starting now.
    pub fn new(info: SessionInfo) -> Self {
        Self {
            info,
            started: Instant::now(),
            started_wall: chrono::Utc::now(),
            size: None,
            header_cut: false,
            lines: String::new(),
            first_line_at: None,
            seq: 0,
            carry: Default::default(),
            text: String::new(),
        }
    }

    /// Chunks cut so far (the next seq).
    pub fn chunks(&self) -> u64 {
        self.seq
    }

    fn time(&self) -> f64 {
        (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e6
    }

    fn line(&mut self, code: &str, text: &str, out: &mut Vec<Chunk>) {
        let time = self.time();
        let line = serde_json::json!([time, code, text]).to_string();
        self.lines.push_str(&line);
        self.lines.push('\n');
        let first = *self.first_line_at.get_or_insert_with(Instant::now);
        if self.lines.len() >= CHUNK_BYTES || first.elapsed() >= CHUNK_AGE {
            self.cut(out);
        }
    }

    /// Output or input bytes (already redacted); `stderr` keeps its own UTF-8 carry.
    pub fn data(&mut self, kind: Kind, stderr: bool, data: &[u8], out: &mut Vec<Chunk>) {
        let (carry, code) = match (kind, stderr) {
            (Kind::Output, false) => (0, "o"),
            (Kind::Output, true) => (1, "o"),
            (Kind::Input, _) => (2, "i"),
        };
        for piece in data.chunks(LINE_BYTES) {
            let mut text = std::mem::take(&mut self.text);
            text.clear();
            self.carry[carry].decode(piece, &mut text);
            if !text.is_empty() {
                self.line(code, &text, out);
            }
            self.text = text;
        }
    }

    /// A terminal resize; the first one also sets the header's size.
    pub fn resize(&mut self, size: TermSize, out: &mut Vec<Chunk>) {
        if self.size.is_none() {
            self.size = Some(size);
        }
        self.line("r", &format!("{}x{}", size.width, size.height), out);
    }

    /// The first terminal size seen.
    pub fn first_size(&self) -> Option<TermSize> {
        self.size
    }

    /// Cuts the lines written so far into a chunk (after the header, on first use).
    pub fn cut(&mut self, out: &mut Vec<Chunk>) {
        if !self.header_cut {
            self.header_cut = true;
            out.push(Chunk {
                seq: self.seq,
                stream: "header",
                data: self.header_line(),
            });
            self.seq += 1;
        }
        if self.lines.is_empty() {
            return;
        }
        out.push(Chunk {
            seq: self.seq,
            stream: "events",
            data: std::mem::take(&mut self.lines),
        });
        self.seq += 1;
        self.first_line_at = None;
    }

    /// The session ended: writes held-back characters and cuts the last chunk.
    pub fn finish(&mut self, out: &mut Vec<Chunk>) {
        for (i, code) in [(0, "o"), (1, "o"), (2, "i")] {
            let mut text = String::new();
            self.carry[i].flush(&mut text);
            if !text.is_empty() {
                self.line(code, &text, out);
            }
        }
        self.cut(out);
    }

    fn header_line(&self) -> String {
        let size = self.size.unwrap_or(TermSize {
            width: 80,
            height: 24,
        });
        let command = if self.info.command.is_empty() {
            "attach".to_string()
        } else {
            self.info.command.join(" ")
        };
        let header = Header {
            version: 2,
            width: size.width,
            height: size.height,
            timestamp: self.started_wall.timestamp(),
            env: Env {
                term: "xterm-256color",
                shell: self.info.command.first().cloned().unwrap_or_default(),
            },
            title: format!(
                "{}@{}/{}: {command}",
                self.info.user, self.info.namespace, self.info.pod
            ),
            gatehouse: &self.info,
        };
        let mut line = serde_json::to_string(&header).unwrap_or_default();
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[Chunk]) -> Vec<serde_json::Value> {
        chunks
            .iter()
            .flat_map(|c| c.data.lines())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    #[test]
    fn header_then_events_with_split_characters_joined() {
        let mut w = CastWriter::new(SessionInfo {
            user: "alice".into(),
            pod: "web".into(),
            command: vec!["sh".into()],
            tty: true,
            ..SessionInfo::default()
        });
        let mut out = Vec::new();
        w.resize(
            TermSize {
                width: 100,
                height: 40,
            },
            &mut out,
        );
        let euro = "€".as_bytes();
        w.data(Kind::Output, false, &euro[..1], &mut out);
        w.data(Kind::Output, false, &euro[1..], &mut out);
        w.data(Kind::Input, false, b"ls\r", &mut out);
        w.data(Kind::Output, true, b"\xffok", &mut out);
        w.finish(&mut out);
        assert_eq!(out[0].seq, 0);
        assert_eq!(out[0].stream, "header");
        let all = lines(&out);
        assert_eq!(all[0]["version"], 2);
        assert_eq!(all[0]["width"], 100);
        assert_eq!(all[0]["height"], 40);
        assert_eq!(all[0]["gatehouse"]["user"], "alice");
        assert_eq!(all[0]["gatehouse"]["tty"], true);
        let events: Vec<(String, String)> = all[1..]
            .iter()
            .map(|e| {
                (
                    e[1].as_str().unwrap_or("").into(),
                    e[2].as_str().unwrap_or("").into(),
                )
            })
            .collect();
        assert_eq!(
            events,
            vec![
                ("r".into(), "100x40".into()),
                ("o".into(), "€".into()),
                ("i".into(), "ls\r".into()),
                ("o".into(), "\u{fffd}ok".into()),
            ]
        );
        let seqs: Vec<u64> = out.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, (0..out.len() as u64).collect::<Vec<_>>());
    }

    #[test]
    fn big_output_is_cut_into_bounded_chunks() {
        let mut w = CastWriter::new(SessionInfo::default());
        let mut out = Vec::new();
        let data = vec![b'x'; 1 << 20];
        w.data(Kind::Output, false, &data, &mut out);
        w.finish(&mut out);
        assert!(out.len() > 10);
        assert!(
            out.iter()
                .all(|c| c.data.len() < CHUNK_BYTES + LINE_BYTES + 64)
        );
        let text: String = lines(&out[1..])
            .iter()
            .map(|e| e[2].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(text.len(), 1 << 20);
    }
}
