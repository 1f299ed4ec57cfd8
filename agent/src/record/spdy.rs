//! SPDY/3.1 tap for both directions of an exec/attach/port-forward session: each direction
//! has its own decoder (and so its own zlib header context, as the peers do), and the
//! streams kubectl opens are mapped to their role by their `streamtype` (and `port`).
//!
//! Memory is bounded by the codec's limits: a frame of at most 1 MiB, header blocks of at
//! most 64 KiB; a larger or malformed frame is an error that ends the session.

use super::TapError;
use super::remotecommand::Route;
use gatehouse_common::spdy::{Decoder, FLAG_FIN, Frame};
use std::collections::HashMap;

/// Streams a session may open (kubectl opens 2–5 per exec, 2 per forwarded connection).
const MAX_STREAMS: usize = 4096;

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// kubectl → API server.
    FromClient,
    /// API server → kubectl.
    ToClient,
}

/// What the tap found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Payload on a stream.
    Data {
        /// Which way.
        dir: Dir,
        /// The stream's role.
        route: Route,
        /// Payload.
        data: &'a [u8],
    },
    /// A stream opened (port-forward counts connections).
    Opened(Route),
    /// One side finished or reset a stream.
    Closed(Route),
}

/// Both directions of one SPDY session.
#[derive(Debug, Default)]
pub struct Tap {
    from_client: Decoder,
    to_client: Decoder,
    streams: HashMap<u32, Route>,
    failed: bool,
}

impl Tap {
    /// A tap for a new session.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether both directions ended between frames.
    pub fn at_boundary(&self) -> bool {
        self.from_client.buffered() == 0 && self.to_client.buffered() == 0
    }

    /// Parses `data` of direction `dir`, calling `out` for each event.
    pub fn feed(
        &mut self,
        dir: Dir,
        data: &[u8],
        out: &mut dyn FnMut(Event<'_>) -> Result<(), TapError>,
    ) -> Result<(), TapError> {
        if self.failed {
            return Err(TapError("spdy: stream already failed".into()));
        }
        let result = self.try_feed(dir, data, out);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn try_feed(
        &mut self,
        dir: Dir,
        data: &[u8],
        out: &mut dyn FnMut(Event<'_>) -> Result<(), TapError>,
    ) -> Result<(), TapError> {
        let decoder = match dir {
            Dir::FromClient => &mut self.from_client,
            Dir::ToClient => &mut self.to_client,
        };
        decoder.feed(data);
        loop {
            let decoder = match dir {
                Dir::FromClient => &mut self.from_client,
                Dir::ToClient => &mut self.to_client,
            };
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => return Err(TapError(format!("spdy: {e}"))),
            };
            self.frame(dir, frame, out)?;
        }
    }

    fn frame(
        &mut self,
        dir: Dir,
        frame: Frame,
        out: &mut dyn FnMut(Event<'_>) -> Result<(), TapError>,
    ) -> Result<(), TapError> {
        match frame {
            Frame::SynStream {
                stream_id,
                headers,
                flags,
                ..
            } => {
                if self.streams.len() >= MAX_STREAMS {
                    return Err(TapError(format!(
                        "spdy: more than {MAX_STREAMS} streams in one session"
                    )));
                }
                let stream_type = headers.get("streamtype").unwrap_or("");
                let route = match headers.get("port").map(|p| p.trim().parse::<u16>()) {
                    Some(Ok(port)) if stream_type.eq_ignore_ascii_case("data") => {
                        Route::PortData(port)
                    }
                    Some(Ok(port)) if stream_type.eq_ignore_ascii_case("error") => {
                        Route::PortError(port)
                    }
                    Some(_) => Route::Other,
                    None => Route::from_stream_type(stream_type),
                };
                if self.streams.insert(stream_id, route).is_some() {
                    return Err(TapError(format!("spdy: stream {stream_id} opened twice")));
                }
                out(Event::Opened(route))?;
                if flags & FLAG_FIN != 0 {
                    out(Event::Closed(route))?;
                }
                Ok(())
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let route =
                    self.streams.get(&stream_id).copied().ok_or_else(|| {
                        TapError(format!("spdy: data on unknown stream {stream_id}"))
                    })?;
                if !data.is_empty() {
                    out(Event::Data {
                        dir,
                        route,
                        data: &data,
                    })?;
                }
                if flags & FLAG_FIN != 0 {
                    out(Event::Closed(route))?;
                }
                Ok(())
            }
            Frame::RstStream { stream_id, .. } => match self.streams.get(&stream_id) {
                Some(&route) => out(Event::Closed(route)),
                None => Ok(()),
            },
            Frame::SynReply {
                stream_id, flags, ..
            }
            | Frame::Headers {
                stream_id, flags, ..
            } => match self.streams.get(&stream_id) {
                Some(&route) if flags & FLAG_FIN != 0 => out(Event::Closed(route)),
                _ => Ok(()),
            },
            // PING, GOAWAY, SETTINGS, WINDOW_UPDATE carry no session content.
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_common::spdy::{Encoder, Headers};

    fn syn(enc: &mut Encoder, id: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let h = headers
            .iter()
            .fold(Headers::new(), |h, (k, v)| h.with(*k, *v));
        enc.encode_to_bytes(&Frame::SynStream {
            stream_id: id,
            associated_id: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: h,
        })
        .map(|b| b.to_vec())
        .unwrap_or_default()
    }

    #[test]
    fn streams_map_by_type_and_data_follows_in_both_directions() {
        let mut client = Encoder::new();
        let mut server = Encoder::new();
        let mut c2s = Vec::new();
        c2s.extend(syn(&mut client, 1, &[("streamtype", "error")]));
        c2s.extend(syn(&mut client, 3, &[("streamtype", "stdin")]));
        c2s.extend(syn(&mut client, 5, &[("streamtype", "stdout")]));
        c2s.extend(
            client
                .encode_to_bytes(&Frame::data(3, b"echo hi\n".to_vec(), true))
                .map(|b| b.to_vec())
                .unwrap_or_default(),
        );
        let s2c = server
            .encode_to_bytes(&Frame::data(5, b"hi\n".to_vec(), false))
            .map(|b| b.to_vec())
            .unwrap_or_default();
        let mut tap = Tap::new();
        let mut seen = Vec::new();
        for piece in c2s.chunks(3) {
            let r = tap.feed(Dir::FromClient, piece, &mut |e| {
                seen.push(format!("{e:?}"));
                Ok(())
            });
            assert!(r.is_ok(), "{r:?}");
        }
        let r = tap.feed(Dir::ToClient, &s2c, &mut |e| {
            seen.push(format!("{e:?}"));
            Ok(())
        });
        assert!(r.is_ok(), "{r:?}");
        let text = seen.join("\n");
        assert!(text.contains("Opened(Error)"), "{text}");
        assert!(text.contains("route: Stdin, data: [101, 99"), "{text}");
        assert!(text.contains("Closed(Stdin)"), "{text}");
        assert!(text.contains("dir: ToClient, route: Stdout"), "{text}");
    }

    #[test]
    fn garbage_and_unknown_streams_are_errors() {
        let mut tap = Tap::new();
        let bad = [0x80, 0x02, 0x00, 0x01, 0, 0, 0, 0];
        assert!(tap.feed(Dir::FromClient, &bad, &mut |_| Ok(())).is_err());
        let mut tap = Tap::new();
        let data = Encoder::new()
            .encode_to_bytes(&Frame::data(9, b"x".to_vec(), false))
            .map(|b| b.to_vec())
            .unwrap_or_default();
        assert!(tap.feed(Dir::ToClient, &data, &mut |_| Ok(())).is_err());
        // Once failed, always failed.
        assert!(tap.feed(Dir::ToClient, &[], &mut |_| Ok(())).is_err());
    }
}
