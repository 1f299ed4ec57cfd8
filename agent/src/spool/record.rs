//! The on-disk record: `len: u32 LE | crc32(len bytes ‖ payload): u32 LE | payload`, and
//! the scan that finds where the good records of a segment end.

use std::io::{self, Read};

/// Bytes before the payload (length + CRC).
pub const HEADER_BYTES: usize = 8;

/// Largest payload a record may hold; a longer announced length is corruption.
/// Kept well under the ingest frame limit so one event always fits one batch.
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;

/// CRC of a record: covers the length too, so a flipped length bit is caught.
pub fn checksum(len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends the record holding `payload` to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    // Callers refuse payloads over MAX_RECORD_BYTES, far below u32::MAX.
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// The file ends inside the record (a torn write).
    Short,
    /// The announced length is over [`MAX_RECORD_BYTES`].
    Length(u32),
    /// The CRC does not match the bytes.
    Checksum,
    /// The segment file disappeared under the spool.
    Missing,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Short => write!(f, "file ends inside the record (torn write)"),
            Self::Length(n) => write!(f, "announced length {n} is over the record limit"),
            Self::Checksum => write!(f, "CRC mismatch"),
            Self::Missing => write!(f, "segment file is gone"),
        }
    }
}

/// Reads the next record into `payload`. `Ok(None)` at a clean end of the stream,
/// `Ok(Some(Err(bad)))` when the bytes there are not a good record.
pub fn read_one(
    r: &mut impl Read,
    payload: &mut Vec<u8>,
) -> io::Result<Option<Result<usize, Bad>>> {
    let mut header = [0u8; HEADER_BYTES];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_BYTES {
        return Ok(Some(Err(Bad::Short)));
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len as usize > MAX_RECORD_BYTES {
        return Ok(Some(Err(Bad::Length(len))));
    }
    payload.clear();
    payload.resize(len as usize, 0);
    if read_full(r, payload)? < len as usize {
        return Ok(Some(Err(Bad::Short)));
    }
    if checksum(len, payload) != crc {
        return Ok(Some(Err(Bad::Checksum)));
    }
    Ok(Some(Ok(HEADER_BYTES + len as usize)))
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// What a scan of one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Bytes of good records from the start (where reading must stop).
    pub valid_len: u64,
    /// Good records starting at or after the `from` offset of the scan.
    pub records_from: u64,
    /// Where the first bad record starts and why, if any.
    pub bad: Option<(u64, Bad)>,
}

/// Walks the records of `r` from offset 0; counts those starting at or after `from`.
pub fn scan(r: &mut impl Read, from: u64) -> io::Result<Scan> {
    let mut payload = Vec::new();
    let mut offset = 0u64;
    let mut records_from = 0;
    loop {
        match read_one(r, &mut payload)? {
            None => {
                return Ok(Scan {
                    valid_len: offset,
                    records_from,
                    bad: None,
                });
            }
            Some(Err(bad)) => {
                return Ok(Scan {
                    valid_len: offset,
                    records_from,
                    bad: Some((offset, bad)),
                });
            }
            Some(Ok(n)) => {
                if offset >= from {
                    records_from += 1;
                }
                offset += n as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_records() -> Vec<u8> {
        let mut out = Vec::new();
        encode(b"{\"a\":1}", &mut out);
        encode(b"{\"b\":22}", &mut out);
        out
    }

    #[test]
    fn round_trip_and_clean_end() -> io::Result<()> {
        let bytes = two_records();
        let scan = scan(&mut bytes.as_slice(), 0)?;
        assert_eq!(scan.valid_len, bytes.len() as u64);
        assert_eq!(scan.records_from, 2);
        assert_eq!(scan.bad, None);
        Ok(())
    }

    #[test]
    fn every_truncation_of_the_last_record_is_short() -> io::Result<()> {
        let bytes = two_records();
        let first = HEADER_BYTES as u64 + 7;
        for cut in first as usize + 1..bytes.len() {
            let s = scan(&mut &bytes[..cut], 0)?;
            assert_eq!(s.valid_len, first, "cut at {cut}");
            assert_eq!(s.records_from, 1);
            assert_eq!(s.bad, Some((first, Bad::Short)), "cut at {cut}");
        }
        Ok(())
    }

    #[test]
    fn every_flipped_byte_is_caught() -> io::Result<()> {
        let bytes = two_records();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            let s = scan(&mut b.as_slice(), 0)?;
            assert!(s.bad.is_some(), "flip at {i} not caught");
            assert!(s.valid_len < bytes.len() as u64);
        }
        Ok(())
    }

    #[test]
    fn huge_length_is_refused_without_allocating() -> io::Result<()> {
        let mut b = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        b.extend_from_slice(b"xx");
        let s = scan(&mut b.as_slice(), 0)?;
        assert_eq!(s.bad, Some((0, Bad::Length(u32::MAX))));
        Ok(())
    }
}
