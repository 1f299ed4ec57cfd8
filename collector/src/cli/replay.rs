//! `gatehouse sessions replay`: plays an asciicast v2 recording in the terminal with its
//! timing (optionally faster), or dumps its output at once.

use std::io::Write;
use std::time::Duration;

/// Why a recording cannot be played.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The first line is not an asciicast v2 header.
    #[error("not an asciicast v2 recording: {0}")]
    Header(String),
    /// Writing to the terminal failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// How to play.
#[derive(Debug, Clone, Copy)]
pub struct PlayOptions {
    /// Speed factor (2 = twice as fast); values ≤ 0 are read as 1.
    pub speed: f64,
    /// Longest pause between two events, after the speed factor (`None` = as recorded).
    pub max_wait: Option<Duration>,
    /// No timing at all: every output event at once.
    pub raw: bool,
}

/// What the header says, for the line printed before playing.
#[derive(Debug, Clone, PartialEq)]
pub struct CastInfo {
    /// Terminal width.
    pub width: u64,
    /// Terminal height.
    pub height: u64,
    /// The header's title.
    pub title: String,
}

/// Reads the header of `cast`.
pub fn info(cast: &str) -> Result<CastInfo, ReplayError> {
    let first = cast.lines().next().unwrap_or("");
    let header: serde_json::Value =
        serde_json::from_str(first).map_err(|e| ReplayError::Header(e.to_string()))?;
    if header.get("version").and_then(serde_json::Value::as_u64) != Some(2) {
        return Err(ReplayError::Header("version is not 2".into()));
    }
    Ok(CastInfo {
        width: header["width"].as_u64().unwrap_or(80),
        height: header["height"].as_u64().unwrap_or(24),
        title: header["title"].as_str().unwrap_or("").to_string(),
    })
}

/// Plays the output events (`o`) of `cast` into `out`, calling `sleep` for each pause.
/// Lines that are not events are skipped (a damaged line must not stop the replay).
pub fn play(
    cast: &str,
    options: PlayOptions,
    out: &mut impl Write,
    mut sleep: impl FnMut(Duration),
) -> Result<(), ReplayError> {
    info(cast)?;
    let speed = if options.speed > 0.0 {
        options.speed
    } else {
        1.0
    };
    let mut clock = 0.0f64;
    for line in cast.lines().skip(1) {
        let Ok(event) = serde_json::from_str::<(f64, String, String)>(line) else {
            continue;
        };
        let (time, code, data) = event;
        if code != "o" {
            continue;
        }
        if !options.raw && time > clock {
            let mut wait = Duration::from_secs_f64((time - clock) / speed);
            if let Some(max) = options.max_wait {
                wait = wait.min(max);
            }
            out.flush()?;
            sleep(wait);
        }
        clock = clock.max(time);
        out.write_all(data.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAST: &str = "{\"version\":2,\"width\":100,\"height\":30,\"title\":\"t\"}\n\
        [0.5,\"o\",\"a\"]\n[0.6,\"i\",\"x\"]\n[2.5,\"o\",\"b\"]\nnot json\n[2.5,\"r\",\"80x24\"]\n[12.5,\"o\",\"c\"]\n";

    #[test]
    fn plays_output_with_scaled_and_capped_pauses() -> Result<(), ReplayError> {
        let mut out = Vec::new();
        let mut waits = Vec::new();
        let options = PlayOptions {
            speed: 2.0,
            max_wait: Some(Duration::from_secs(3)),
            raw: false,
        };
        play(CAST, options, &mut out, |d| waits.push(d))?;
        assert_eq!(out, b"abc");
        assert_eq!(
            waits,
            vec![
                Duration::from_millis(250),
                Duration::from_secs(1),
                Duration::from_secs(3)
            ]
        );
        let mut out = Vec::new();
        let raw = PlayOptions {
            raw: true,
            ..options
        };
        play(CAST, raw, &mut out, |_| panic!("raw replay must not wait"))?;
        assert_eq!(out, b"abc");
        assert_eq!(info(CAST)?.width, 100);
        assert!(info("[1]").is_err());
        Ok(())
    }
}
