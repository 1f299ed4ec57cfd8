//! Unit tests of the SPDY/3.1 codec: round trips, split input, malformed and oversized input.
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use super::*;
use crate::spdy::frame::{FLAG_FIN, rst_status};

/// Two SYN_STREAMs (`streamtype: error`, then `stdout`) compressed by Python's zlib with
/// the SPDY/3 dictionary and one shared context: an independent implementation's bytes.
const FOREIGN_SYN_STREAMS: &[u8] = &[
    0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x46, 0x70, 0x3a, 0x2b, 0x29,
    0x4a, 0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x06, 0x00, 0x00, 0x00, 0xff, 0xff,
    0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x19, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xc2, 0x2a, 0x05, 0x4c, 0xcc, 0x29, 0xf9, 0xa5, 0x25, 0x00, 0x00, 0x00, 0x00, 0xff,
    0xff,
];

fn sample_frames() -> Vec<Frame> {
    vec![
        Frame::SynStream {
            stream_id: 1,
            associated_id: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: Headers::new().with("streamtype", "error"),
        },
        Frame::SynStream {
            stream_id: 3,
            associated_id: 0,
            priority: 7,
            slot: 0,
            flags: FLAG_FIN,
            headers: Headers::new()
                .with("streamtype", "data")
                .with("port", "8080")
                .with("requestid", "0"),
        },
        Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: Headers::new(),
        },
        Frame::Headers {
            stream_id: 3,
            flags: FLAG_FIN,
            headers: Headers::new().with("x", "a\0b"),
        },
        Frame::RstStream {
            stream_id: 3,
            status: rst_status::CANCEL,
        },
        Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 1,
                id: 7,
                value: 65536,
            }],
        },
        Frame::Ping { id: 1 },
        Frame::GoAway {
            last_good_stream_id: 9,
            status: 0,
        },
        Frame::WindowUpdate {
            stream_id: 1,
            delta: 1000,
        },
        Frame::data(3, &b"hello"[..], false),
        Frame::data(3, Bytes::new(), true),
    ]
}

fn encode_all(frames: &[Frame]) -> BytesMut {
    let mut enc = Encoder::new();
    let mut wire = BytesMut::new();
    for f in frames {
        enc.encode(f, &mut wire).unwrap();
    }
    wire
}

fn decode_all(dec: &mut Decoder) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(f) = dec.next_frame().unwrap() {
        out.push(f);
    }
    out
}

#[test]
fn round_trip_every_frame_type() {
    let frames = sample_frames();
    let wire = encode_all(&frames);
    let mut dec = Decoder::new();
    dec.feed(&wire);
    assert_eq!(decode_all(&mut dec), frames);
    assert_eq!(dec.buffered(), 0);
}

#[test]
fn input_split_at_every_byte_decodes_the_same() {
    let frames = sample_frames();
    let wire = encode_all(&frames);
    let mut dec = Decoder::new();
    let mut got = Vec::new();
    for b in wire.iter() {
        dec.feed(std::slice::from_ref(b));
        got.extend(decode_all(&mut dec));
    }
    assert_eq!(got, frames);
}

#[test]
fn decodes_frames_compressed_by_another_zlib() {
    let mut dec = Decoder::new();
    dec.feed(FOREIGN_SYN_STREAMS);
    let frames = decode_all(&mut dec);
    assert_eq!(frames.len(), 2);
    let types: Vec<_> = frames
        .iter()
        .map(|f| match f {
            Frame::SynStream { headers, .. } => headers.get("StreamType").map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(types, [Some("error".into()), Some("stdout".into())]);
}

#[test]
fn header_values_split_on_nul_and_ignore_name_case() {
    let h = Headers::new().with("Port", "1\u{0}2");
    assert_eq!(h.get("port"), Some("1"));
    assert_eq!(h.get_all("PORT").collect::<Vec<_>>(), ["1", "2"]);
}

#[test]
fn wrong_version_is_an_error_and_poisons_the_decoder() {
    let mut dec = Decoder::new();
    dec.feed(&[0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1]);
    assert!(matches!(
        dec.next_frame(),
        Err(SpdyError::UnsupportedVersion(2))
    ));
    assert!(dec.next_frame().is_err());
}

#[test]
fn malformed_control_frames_are_errors() {
    // PING with a 3-byte payload.
    let mut dec = Decoder::new();
    dec.feed(&[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x03, 0, 0, 1]);
    assert!(matches!(
        dec.next_frame(),
        Err(SpdyError::Malformed { frame: "PING", .. })
    ));
    // SYN_STREAM whose header block is not zlib.
    let mut dec = Decoder::new();
    dec.feed(&[
        0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0e, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
    ]);
    assert!(dec.next_frame().is_err());
    // SETTINGS whose count disagrees with its length.
    let mut dec = Decoder::new();
    dec.feed(&[0x80, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 9]);
    assert!(dec.next_frame().is_err());
}

#[test]
fn truncated_input_waits_instead_of_failing() {
    let wire = encode_all(&sample_frames()[..1]);
    let mut dec = Decoder::new();
    dec.feed(&wire[..wire.len() - 1]);
    assert_eq!(dec.next_frame().unwrap(), None);
}

#[test]
fn oversized_frame_is_rejected_before_buffering_it() {
    let mut dec = Decoder::with_limits(Limits {
        max_frame_len: 16,
        ..Limits::default()
    });
    dec.feed(&[0, 0, 0, 1, 0, 0, 0, 17]);
    assert!(matches!(
        dec.next_frame(),
        Err(SpdyError::FrameTooLarge { len: 17, .. })
    ));
}

#[test]
fn header_block_larger_than_the_limit_is_rejected() {
    // Highly compressible: a tiny frame that inflates to ~100 KiB.
    let big = "a".repeat(100 << 10);
    let wire = encode_all(&[Frame::SynStream {
        stream_id: 1,
        associated_id: 0,
        priority: 0,
        slot: 0,
        flags: 0,
        headers: Headers::new().with("x", big),
    }]);
    assert!(wire.len() < 4096);
    let mut dec = Decoder::new();
    dec.feed(&wire);
    assert!(matches!(
        dec.next_frame(),
        Err(SpdyError::HeaderBlockTooLarge { .. })
    ));
}

#[test]
fn bogus_pair_count_does_not_allocate() {
    let raw = [0xff, 0xff, 0xff, 0xff];
    assert!(crate::spdy::zlib::decode_block(&raw).is_err());
}

#[test]
fn unknown_control_types_are_surfaced() {
    let mut dec = Decoder::new();
    dec.feed(&[0x80, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x01, 7]);
    assert!(matches!(
        dec.next_frame().unwrap(),
        Some(Frame::Unknown { frame_type: 10, .. })
    ));
}

#[test]
fn encoder_rejects_unencodable_values() {
    let mut enc = Encoder::new();
    assert!(enc.encode_to_bytes(&Frame::Ping { id: 1 }).is_ok());
    assert!(
        enc.encode_to_bytes(&Frame::data(u32::MAX, Bytes::new(), false))
            .is_err()
    );
}
