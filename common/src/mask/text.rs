//! Streaming text masker for logs and exec/attach output: regex detectors applied to a
//! byte stream that arrives in arbitrary chunks, holding back only what could still
//! become a match.
//!
//! # How the hold-back works
//! Every detector is compiled twice from the same patterns: a `meta::Regex` finds and
//! replaces matches, and a lazy DFA answers "could a match start at byte `i` and still be
//! going at the end of what has arrived?" (run anchored from `i`; alive at the end ⇒
//! yes). Bytes before the earliest such position are final and are emitted at once, so
//! interactive output stays live and a secret split across two chunks is still caught.
//! The hold-back is bounded by [`MAX_HOLD_BACK`]: a candidate that is still growing after
//! that many bytes is decided on what has arrived.
//!
//! PEM private keys are a state, not a regex: after a `-----BEGIN … PRIVATE KEY-----` line
//! everything up to `-----END` is dropped as it arrives (one marker line in its place), so
//! a key of any length is masked without buffering it.

use super::{MARKER, MaskError};
use regex_automata::hybrid::dfa::{Cache as DfaCache, DFA};
use regex_automata::meta::Regex;
use regex_automata::util::captures::Captures;
use regex_automata::{Anchored, Input};
use std::sync::Arc;

/// Most bytes held back waiting for a possible match to complete.
pub const MAX_HOLD_BACK: usize = 8 * 1024;

/// Built-in detector names, in priority order (earlier wins when two match at one place).
pub const BUILTIN_DETECTORS: &[&str] = &[
    "pem-private-key",
    "aws-secret-access-key",
    "aws-access-key-id",
    "jwt",
    "password-pair",
];

const PEM_END: &[u8] = b"-----END";

/// The pattern of a built-in detector. Group 1, when present, is the part replaced (the
/// key of a `password=` pair stays visible so the reader knows what was hidden).
fn builtin_pattern(name: &str) -> Option<&'static str> {
    Some(match name {
        "pem-private-key" => r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY-----",
        // The 40-character secret is only recognisable by its context (key name).
        "aws-secret-access-key" => {
            r#"(?i)(?-u:\b)(?:aws_?secret_?access_?key|aws_?secret_?key|secret_?access_?key)["']?[ \t]*[:=][ \t]*["']?([A-Za-z0-9/+]{40,128})"#
        }
        "aws-access-key-id" => {
            r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA)[A-Z0-9]{16}"
        }
        "jwt" => r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
        // `password=…`, `token: …`, `"api_key":"…"`, also as a suffix (`DB_PASSWORD=`);
        // blanks only (not newlines) between key and value, so a `Password:` prompt does
        // not swallow the next line.
        "password-pair" => {
            r#"(?i)(?:password|passwd|secret|token|api[_-]?key|access[_-]?key)["']?[ \t]*[:=][ \t]*["']?([^\s"',;&]{1,256})"#
        }
        _ => return None,
    })
}

/// What to do with a match of one detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Replace group 1 if the pattern has one, else the whole match.
    Replace,
    /// Keep the header line, then drop everything up to `-----END`.
    PemBlock,
}

/// A compiled set of detectors, shared by every masker that uses it.
#[derive(Debug)]
pub struct TextDetectors {
    names: Vec<String>,
    actions: Vec<Action>,
    regex: Regex,
    dfa: DFA,
    /// Bytes a match can start with (whatever precedes them): the hold-back check skips
    /// every other position without running the DFA.
    starts: [bool; 256],
}

impl TextDetectors {
    /// Compiles `builtin` (names from [`BUILTIN_DETECTORS`]) and `custom` patterns (name,
    /// regex). Custom patterns that can match the empty string are refused: they would hold
    /// back every byte.
    pub fn new(builtin: &[String], custom: &[(String, String)]) -> Result<Self, MaskError> {
        let mut names = Vec::new();
        let mut actions = Vec::new();
        let mut patterns: Vec<String> = Vec::new();
        for name in builtin {
            let pattern =
                builtin_pattern(name).ok_or_else(|| MaskError::UnknownDetector(name.clone()))?;
            names.push(name.clone());
            actions.push(if name == "pem-private-key" {
                Action::PemBlock
            } else {
                Action::Replace
            });
            patterns.push(pattern.to_string());
        }
        for (name, pattern) in custom {
            let single = Regex::new(pattern).map_err(|e| MaskError::Regex {
                pattern: pattern.clone(),
                reason: e.to_string(),
            })?;
            let min_len = regex_automata::util::syntax::parse(pattern)
                .ok()
                .and_then(|hir| hir.properties().minimum_len());
            if single.is_match("") || min_len == Some(0) {
                return Err(MaskError::Regex {
                    pattern: pattern.clone(),
                    reason: "matches the empty string".into(),
                });
            }
            names.push(name.clone());
            actions.push(Action::Replace);
            patterns.push(pattern.clone());
        }
        let regex = Regex::new_many(&patterns).map_err(|e| MaskError::Regex {
            pattern: patterns.join(" | "),
            reason: e.to_string(),
        })?;
        let dfa = DFA::builder()
            // Never give up on a pathological input: a slower search beats an unmasked one.
            .configure(DFA::config().minimum_cache_clear_count(None))
            .build_many(&patterns)
            .map_err(|e| MaskError::Regex {
                pattern: patterns.join(" | "),
                reason: e.to_string(),
            })?;
        let starts = start_bytes(&dfa);
        Ok(Self {
            names,
            actions,
            regex,
            dfa,
            starts,
        })
    }

    /// The built-in detectors compiled once per process and shared (recordings fall back
    /// to these when the request's profile names no text detectors: they are always masked).
    pub fn shared_builtin() -> Arc<Self> {
        static BUILTIN: std::sync::OnceLock<Arc<TextDetectors>> = std::sync::OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                // The built-in patterns are constants covered by tests; failing to compile
                // them is a programming error caught by the first test run.
                #[expect(clippy::expect_used, reason = "built-in patterns are constants")]
                Arc::new(TextDetectors::builtin().expect("built-in detectors compile"))
            })
            .clone()
    }

    /// All built-in detectors, no custom ones.
    pub fn builtin() -> Result<Self, MaskError> {
        let all: Vec<String> = BUILTIN_DETECTORS.iter().map(|s| s.to_string()).collect();
        Self::new(&all, &[])
    }

    /// Detector names in priority order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Masks a complete text at once.
    pub fn mask_all(self: &Arc<Self>, text: &[u8]) -> Vec<u8> {
        let mut masker = TextMasker::new(self.clone());
        let mut out = Vec::with_capacity(text.len());
        masker.push(text, &mut out);
        masker.finish(&mut out);
        out
    }
}

/// The bytes after which an anchored search is not immediately dead, for every kind of
/// look-behind (none, word, non-word, line ends, non-ASCII). Unknown answers count as
/// possible starts.
fn start_bytes(dfa: &DFA) -> [bool; 256] {
    let mut starts = [false; 256];
    let mut cache = dfa.create_cache();
    let contexts: [&[u8]; 6] = [b"", b"a", b" ", b"\n", b"\r", b"\x80"];
    for before in contexts {
        let input = Input::new(before)
            .span(before.len()..before.len())
            .anchored(Anchored::Yes);
        let Ok(start) = dfa.start_state_forward(&mut cache, &input) else {
            return [true; 256];
        };
        for b in 0..=255u8 {
            let possible = dfa
                .next_state(&mut cache, start, b)
                .map_or(true, |next| !next.is_dead());
            starts[usize::from(b)] |= possible;
        }
    }
    starts
}

/// Masks one byte stream (one log, one exec channel). Cheap to create per stream.
pub struct TextMasker {
    detectors: Arc<TextDetectors>,
    dfa_cache: DfaCache,
    caps: Captures,
    /// Unprocessed bytes, preceded by up to one already emitted byte kept as look-behind
    /// context for `\b`.
    buf: Vec<u8>,
    /// Index in `buf` of the first unprocessed byte (0 or 1).
    start: usize,
    /// Inside a PEM private key block: drop bytes until `-----END`.
    in_pem: bool,
}

impl std::fmt::Debug for TextMasker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the buffer: it may hold the start of a secret.
        f.debug_struct("TextMasker")
            .field("held_back", &(self.buf.len() - self.start))
            .field("in_pem", &self.in_pem)
            .finish()
    }
}

impl Default for TextMasker {
    /// A masker with all built-in detectors.
    fn default() -> Self {
        Self::new(TextDetectors::shared_builtin())
    }
}

impl TextMasker {
    /// A masker for one stream using `detectors`.
    pub fn new(detectors: Arc<TextDetectors>) -> Self {
        let dfa_cache = detectors.dfa.create_cache();
        let caps = detectors.regex.create_captures();
        Self {
            detectors,
            dfa_cache,
            caps,
            buf: Vec::new(),
            start: 0,
            in_pem: false,
        }
    }

    /// Bytes received but not yet emitted (at most about [`MAX_HOLD_BACK`] plus the last
    /// input).
    pub fn held_back(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Masks `input`, appending to `out` every byte that can no longer be part of a match.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.buf.extend_from_slice(input);
        self.process(out, false);
    }

    /// Ends the stream: emits (masked) whatever was held back.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.process(out, true);
        self.buf.clear();
        self.start = 0;
        self.in_pem = false;
    }

    fn process(&mut self, out: &mut Vec<u8>, at_end: bool) {
        let len = self.buf.len();
        let mut pos = self.start;
        let mut cached_hold = None;
        loop {
            if self.in_pem {
                match find(&self.buf[pos..len], PEM_END) {
                    Some(at) => {
                        // The END line is not secret; it goes out as ordinary text.
                        pos += at;
                        self.in_pem = false;
                    }
                    None => {
                        // Drop the key material, keeping only a possible partial `-----END`.
                        let keep = if at_end { 0 } else { PEM_END.len() - 1 };
                        pos = pos.max(len.saturating_sub(keep));
                        break;
                    }
                }
            }
            if pos >= len {
                break;
            }
            // The earliest live position only moves when a match ends past it.
            let hold = match cached_hold {
                Some(h) if h >= pos => h,
                _ if at_end => len,
                _ => self.earliest_live(pos, len),
            };
            cached_hold = Some(hold);
            let input = Input::new(&self.buf[..len]).span(pos..len);
            self.detectors.regex.search_captures(&input, &mut self.caps);
            let found = self.caps.get_match().filter(|m| m.start() < hold);
            let Some(m) = found else {
                out.extend_from_slice(&self.buf[pos..hold]);
                pos = hold;
                break;
            };
            out.extend_from_slice(&self.buf[pos..m.start()]);
            if m.is_empty() {
                // Only possible through look-around oddities; step over a byte.
                out.push(self.buf[m.start()]);
                pos = m.start() + 1;
                continue;
            }
            match self.detectors.actions[m.pattern().as_usize()] {
                Action::Replace => match self.caps.get_group(1) {
                    Some(g) => {
                        out.extend_from_slice(&self.buf[m.start()..g.start]);
                        out.extend_from_slice(MARKER.as_bytes());
                        out.extend_from_slice(&self.buf[g.end..m.end()]);
                    }
                    None => out.extend_from_slice(MARKER.as_bytes()),
                },
                Action::PemBlock => {
                    out.extend_from_slice(&self.buf[m.start()..m.end()]);
                    out.push(b'\n');
                    out.extend_from_slice(MARKER.as_bytes());
                    out.push(b'\n');
                    self.in_pem = true;
                }
            }
            pos = m.end();
        }
        // Keep one emitted byte as look-behind context for the next search.
        let keep_from = pos.saturating_sub(1);
        self.buf.drain(..keep_from);
        self.start = pos - keep_from;
    }

    /// The first position in `pos..len` where a match could start and not yet be decided,
    /// or `len` when there is none. Only the last [`MAX_HOLD_BACK`] bytes are considered.
    fn earliest_live(&mut self, pos: usize, len: usize) -> usize {
        let from = pos.max(len.saturating_sub(MAX_HOLD_BACK));
        (from..len)
            .find(|&i| self.detectors.starts[usize::from(self.buf[i])] && self.live_from(i, len))
            .unwrap_or(len)
    }

    /// Whether an anchored search from `i` is still alive after the last byte.
    fn live_from(&mut self, i: usize, len: usize) -> bool {
        let dfa = &self.detectors.dfa;
        let cache = &mut self.dfa_cache;
        let input = Input::new(&self.buf[..len])
            .span(i..len)
            .anchored(Anchored::Yes);
        // Any engine trouble counts as "alive": holding back is the safe answer.
        let Ok(mut sid) = dfa.start_state_forward(cache, &input) else {
            return true;
        };
        for &b in &self.buf[i..len] {
            sid = match dfa.next_state(cache, sid, b) {
                Ok(sid) => sid,
                Err(_) => return true,
            };
            if sid.is_dead() {
                return false;
            }
            if sid.is_quit() {
                return true;
            }
        }
        // Not dead yet. The DFA reports a match one byte late, so a match that ended at
        // the last byte leaves a state whose every successor is dead: such a candidate is
        // decided. Anything with a live successor may still change with more input.
        (0..=255u8).any(|b| {
            dfa.next_state(cache, sid, b)
                .map_or(true, |next| !next.is_dead())
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const AWS_ID: &str = "AKIAIOSFODNN7EXAMPLE";
    const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";

    fn detectors() -> Arc<TextDetectors> {
        Arc::new(TextDetectors::builtin().unwrap())
    }

    fn chunked(d: &Arc<TextDetectors>, text: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut m = TextMasker::new(d.clone());
        let mut out = Vec::new();
        let mut last = 0;
        for &c in cuts {
            m.push(&text[last..c], &mut out);
            last = c;
        }
        m.push(&text[last..], &mut out);
        m.finish(&mut out);
        out
    }

    fn sample() -> String {
        format!(
            "starting\nAWS_ACCESS_KEY_ID={AWS_ID}\naws_secret_access_key = {AWS_SECRET}\n\
             auth: Bearer {JWT}\nDB_PASSWORD=hunter2 rest\n\
             -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretkeymaterial\nMORE+KEY/LINES==\n\
             -----END RSA PRIVATE KEY-----\ndone\n"
        )
    }

    fn assert_clean(out: &[u8]) {
        let s = String::from_utf8_lossy(out);
        for secret in [
            AWS_ID,
            AWS_SECRET,
            JWT,
            "hunter2",
            "secretkeymaterial",
            "MORE+KEY",
        ] {
            assert!(!s.contains(secret), "{secret} leaked in {s}");
        }
        assert!(s.contains("starting\n") && s.ends_with("done\n"), "{s}");
        assert!(s.contains("-----END RSA PRIVATE KEY-----"), "{s}");
    }

    #[test]
    fn masks_every_builtin_detector() {
        let d = detectors();
        let out = d.mask_all(sample().as_bytes());
        assert_clean(&out);
        let s = String::from_utf8_lossy(&out);
        assert!(s.contains(&format!("AWS_ACCESS_KEY_ID={MARKER}")), "{s}");
        assert!(s.contains(&format!("DB_PASSWORD={MARKER} rest")), "{s}");
        assert!(
            s.contains(&format!("aws_secret_access_key = {MARKER}")),
            "{s}"
        );
    }

    #[test]
    fn a_split_at_every_offset_gives_the_same_output() {
        let d = detectors();
        let text = sample();
        let whole = d.mask_all(text.as_bytes());
        for cut in 0..=text.len() {
            assert_eq!(chunked(&d, text.as_bytes(), &[cut]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn byte_at_a_time_gives_the_same_output() {
        let d = detectors();
        let text = sample();
        let cuts: Vec<usize> = (1..text.len()).collect();
        assert_eq!(
            chunked(&d, text.as_bytes(), &cuts),
            d.mask_all(text.as_bytes())
        );
    }

    #[test]
    fn random_chunking_never_changes_the_output() {
        let d = detectors();
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let pieces = [
            AWS_ID,
            AWS_SECRET,
            JWT,
            " ",
            "\n",
            "x",
            "password=",
            "token: ",
            "aws_secret_access_key=",
            "-----BEGIN PRIVATE KEY-----\n",
            "-----END PRIVATE KEY-----\n",
            "AKIA",
            "eyJ",
            "é",
        ];
        for _ in 0..300 {
            let n = rng.random_range(1..40);
            let text: String = (0..n)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            let whole = d.mask_all(text.as_bytes());
            let mut cuts: Vec<usize> = (0..rng.random_range(0..8))
                .map(|_| rng.random_range(0..=text.len()))
                .collect();
            cuts.sort_unstable();
            assert_eq!(
                chunked(&d, text.as_bytes(), &cuts),
                whole,
                "text {text:?} cuts {cuts:?}"
            );
            let s = String::from_utf8_lossy(&whole);
            assert!(!s.contains(AWS_ID) && !s.contains(JWT), "{s}");
        }
    }

    #[test]
    fn output_stays_live_and_holds_back_only_possible_starts() {
        let d = detectors();
        let mut m = TextMasker::new(d);
        let mut out = Vec::new();
        m.push(b"$ ls -l\nfile one\n", &mut out);
        assert_eq!(out, b"$ ls -l\nfile one\n");
        out.clear();
        m.push(b"key AKIAIOSF", &mut out);
        assert_eq!(out, b"key ");
        assert_eq!(m.held_back(), 8);
        m.push(b"ODNN7EXAMPLE\n", &mut out);
        assert_eq!(out, format!("key {MARKER}\n").as_bytes());
        assert_eq!(m.held_back(), 0);
    }

    #[test]
    fn a_long_pem_block_is_dropped_without_buffering() {
        let d = detectors();
        let mut m = TextMasker::new(d);
        let mut out = Vec::new();
        m.push(b"-----BEGIN EC PRIVATE KEY-----\n", &mut out);
        for _ in 0..1000 {
            m.push(b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n", &mut out);
            assert!(m.held_back() < 16);
        }
        m.push(b"-----END EC PRIVATE KEY-----\nafter\n", &mut out);
        m.finish(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            format!(
                "-----BEGIN EC PRIVATE KEY-----\n{MARKER}\n-----END EC PRIVATE KEY-----\nafter\n"
            )
        );
    }

    #[test]
    fn hold_back_is_bounded() {
        let d = detectors();
        let mut m = TextMasker::new(d);
        let mut out = Vec::new();
        m.push(b"eyJ", &mut out);
        for _ in 0..10_000 {
            m.push(b"abcdefgh", &mut out);
            assert!(m.held_back() <= MAX_HOLD_BACK + 8);
        }
    }

    #[test]
    fn custom_patterns_and_their_errors() {
        let d = Arc::new(
            TextDetectors::new(&[], &[("ticket".into(), r"TKT-[0-9]{6}".into())]).unwrap(),
        );
        assert_eq!(
            d.mask_all(b"id TKT-123456 ok"),
            format!("id {MARKER} ok").as_bytes()
        );
        assert!(TextDetectors::new(&[], &[("bad".into(), "(".into())]).is_err());
        assert!(TextDetectors::new(&[], &[("empty".into(), "a*".into())]).is_err());
        assert!(TextDetectors::new(&["nope".into()], &[]).is_err());
    }

    #[test]
    fn binary_input_passes_through() {
        let d = detectors();
        let input: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        assert_eq!(d.mask_all(&input), input);
    }
}
