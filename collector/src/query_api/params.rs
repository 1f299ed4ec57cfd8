//! Query-string parameters of the query API: filters, page, output format, and times given
//! as RFC 3339 or relative to now (`30m`, `24h`, `7d`). Bad values are a [`ParamError`]
//! that names the parameter (the API answers it with 400).

use crate::store::query::{Cursor, PageRequest, RequestFilter, SessionFilter};
use chrono::{DateTime, Utc};

/// A parameter that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    /// A time is neither RFC 3339 nor a relative duration.
    #[error(
        "parameter {name:?}: {value:?} is not a time (use RFC 3339 like 2026-01-02T15:04:05Z, or a duration ago like 30m, 24h, 7d)"
    )]
    Time {
        /// Which parameter.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// `status` is not an HTTP status code.
    #[error("parameter \"status\": {0:?} is not an HTTP status code (100-599)")]
    Status(String),
    /// `limit` is not a number.
    #[error("parameter \"limit\": {0:?} is not a whole number")]
    Limit(String),
    /// `cursor` does not decode.
    #[error(
        "parameter \"cursor\": invalid cursor (pass back the `next` value of a previous page unchanged)"
    )]
    Cursor,
    /// `format` is unknown.
    #[error("parameter \"format\": {0:?} is not json or ndjson")]
    Format(String),
    /// A parameter this endpoint does not know (a typo would otherwise silently widen the search).
    #[error("unknown parameter {0:?} (this endpoint takes: {1})")]
    Unknown(String, &'static str),
    /// `since` is not before `until`.
    #[error("parameter \"since\" must be before \"until\"")]
    EmptyRange,
}

/// Parses a time: RFC 3339, or `<n><unit>` ago with unit `s`, `m`, `h`, `d` or `w`.
pub fn parse_time(
    name: &'static str,
    value: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ParamError> {
    let bad = || ParamError::Time {
        name,
        value: value.to_string(),
    };
    let v = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    let split = v.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = v.split_at(split);
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let secs_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let ago = n
        .checked_mul(secs_per)
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(bad)?;
    now.checked_sub_signed(ago).ok_or_else(bad)
}

/// How results are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON page `{"items":[...],"next":...}`.
    Json,
    /// Every matching item, one JSON object a line, following cursors server-side.
    Ndjson,
}

/// What a list endpoint was asked.
#[derive(Debug, Clone, PartialEq)]
pub struct ListParams<F> {
    /// The filters.
    pub filter: F,
    /// The page.
    pub page: PageRequest,
    /// Only set by `format=`; the caller also honours `Accept`.
    pub format: Option<Format>,
}

fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn non_empty(v: String) -> Option<String> {
    (!v.is_empty()).then_some(v)
}

/// Handles the parameters every list endpoint takes; `false` when `key` is not one of them.
fn common(
    key: &str,
    value: &str,
    page: &mut PageRequest,
    format: &mut Option<Format>,
) -> Result<bool, ParamError> {
    match key {
        // Larger or zero limits are clamped by `PageRequest::effective_limit`.
        "limit" => {
            let n: u64 = value
                .trim()
                .parse()
                .map_err(|_| ParamError::Limit(value.to_string()))?;
            page.limit = u32::try_from(n).unwrap_or(u32::MAX);
        }
        "cursor" if !value.is_empty() => {
            page.after = Some(Cursor::decode(value).map_err(|_| ParamError::Cursor)?);
        }
        "cursor" => {}
        "format" => {
            *format = Some(match value {
                "json" => Format::Json,
                "ndjson" => Format::Ndjson,
                other => return Err(ParamError::Format(other.to_string())),
            });
        }
        _ => return Ok(false),
    }
    Ok(true)
}

const REQUEST_PARAMS: &str = "user, group, verb, resource, namespace, name, decision, status, session, since, until, limit, cursor, format";
const SESSION_PARAMS: &str = "user, namespace, pod, kind, since, until, limit, cursor, format";

fn check_range(
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<(), ParamError> {
    match (since, until) {
        (Some(s), Some(u)) if s >= u => Err(ParamError::EmptyRange),
        _ => Ok(()),
    }
}

/// Parameters of `GET /v1/audit/requests`.
pub fn request_params(
    query: Option<&str>,
    now: DateTime<Utc>,
) -> Result<ListParams<RequestFilter>, ParamError> {
    let mut f = RequestFilter::default();
    let mut page = PageRequest::default();
    let mut format = None;
    for (k, v) in pairs(query) {
        if common(&k, &v, &mut page, &mut format)? {
            continue;
        }
        match k.as_str() {
            "user" => f.user = non_empty(v),
            "group" => f.group = non_empty(v),
            "verb" => f.verb = non_empty(v),
            "resource" => f.resource = non_empty(v),
            "namespace" => f.namespace = non_empty(v),
            "name" => f.name = non_empty(v),
            "decision" => f.decision = non_empty(v),
            "session" => f.session_id = non_empty(v),
            "status" => {
                let s = v
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or(ParamError::Status(v))?;
                f.status = Some(s);
            }
            "since" => f.since = Some(parse_time("since", &v, now)?),
            "until" => f.until = Some(parse_time("until", &v, now)?),
            _ => return Err(ParamError::Unknown(k, REQUEST_PARAMS)),
        }
    }
    check_range(f.since, f.until)?;
    Ok(ListParams {
        filter: f,
        page,
        format,
    })
}

/// Parameters of `GET /v1/sessions`.
pub fn session_params(
    query: Option<&str>,
    now: DateTime<Utc>,
) -> Result<ListParams<SessionFilter>, ParamError> {
    let mut f = SessionFilter::default();
    let mut page = PageRequest::default();
    let mut format = None;
    for (k, v) in pairs(query) {
        if common(&k, &v, &mut page, &mut format)? {
            continue;
        }
        match k.as_str() {
            "user" => f.user = non_empty(v),
            "namespace" => f.namespace = non_empty(v),
            "pod" => f.pod = non_empty(v),
            "kind" => f.kind = non_empty(v),
            "since" => f.since = Some(parse_time("since", &v, now)?),
            "until" => f.until = Some(parse_time("until", &v, now)?),
            _ => return Err(ParamError::Unknown(k, SESSION_PARAMS)),
        }
    }
    check_range(f.since, f.until)?;
    Ok(ListParams {
        filter: f,
        page,
        format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn times_are_rfc3339_or_relative() -> Result<(), ParamError> {
        let t = parse_time("since", "2026-01-02T03:04:05+01:00", now())?;
        assert_eq!(t.to_rfc3339(), "2026-01-02T02:04:05+00:00");
        assert_eq!(
            parse_time("since", "1h", now())?.timestamp(),
            1_800_000_000 - 3600
        );
        assert_eq!(
            parse_time("since", "7d", now())?.timestamp(),
            1_800_000_000 - 7 * 86_400
        );
        for bad in [
            "",
            "yesterday",
            "1y",
            "h",
            "-1h",
            "99999999999999999999d",
            "2026-13-01",
        ] {
            assert!(parse_time("since", bad, now()).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn request_filters_parse() -> Result<(), ParamError> {
        let p = request_params(
            Some(
                "user=alice&group=sec&verb=delete&status=403&limit=5&namespace=&since=24h&decision=deny",
            ),
            now(),
        )?;
        assert_eq!(p.filter.user.as_deref(), Some("alice"));
        assert_eq!(p.filter.group.as_deref(), Some("sec"));
        assert_eq!(p.filter.status, Some(403));
        assert_eq!(p.filter.namespace, None);
        assert_eq!(p.filter.decision.as_deref(), Some("deny"));
        assert_eq!(p.page.limit, 5);
        assert!(p.filter.since.is_some());
        Ok(())
    }

    #[test]
    fn bad_parameters_say_which() {
        let msg = |q: &str| {
            request_params(Some(q), now())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(msg("status=abc").contains("status"));
        assert!(msg("status=42").contains("status"));
        assert!(msg("since=never").contains("since"));
        assert!(msg("cursor=!!").contains("cursor"));
        assert!(msg("limit=-1").contains("limit"));
        assert!(msg("usr=alice").contains("unknown parameter \"usr\""));
        assert!(msg("format=xml").contains("format"));
        assert!(msg("since=1h&until=2h").contains("before"));
        assert!(session_params(Some("verb=get"), now()).is_err());
    }

    #[test]
    fn huge_or_zero_limits_are_clamped() -> Result<(), ParamError> {
        let p = request_params(Some("limit=99999999999"), now())?;
        assert_eq!(p.page.effective_limit(), crate::store::query::MAX_PAGE);
        let p = request_params(Some("limit=0"), now())?;
        assert_eq!(p.page.effective_limit(), 100);
        Ok(())
    }

    #[test]
    fn a_cursor_round_trips() -> Result<(), ParamError> {
        let c = Cursor {
            time_micros: 5,
            event_id: "x".into(),
        };
        let p = session_params(Some(&format!("cursor={}&kind=exec", c.encode())), now())?;
        assert_eq!(p.page.after, Some(c));
        assert_eq!(p.filter.kind.as_deref(), Some("exec"));
        Ok(())
    }
}
