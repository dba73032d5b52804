//! Timestamp formats as OpenStack services emit them. Strict clients parse
//! these, so each service picks the exact form its upstream uses.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn from_micros(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Keystone's form: `2026-11-21T18:00:00.000000Z` (always six digits).
pub fn keystone(micros: i64) -> String {
    let t = from_micros(micros);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Nova/Neutron/Glance's form: `2026-11-21T18:00:00Z` (seconds).
pub fn seconds_z(micros: i64) -> String {
    let t = from_micros(micros);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses an ISO 8601 / RFC 3339 timestamp as clients send it (with or
/// without a zone, with or without fractional seconds; no zone means UTC)
/// into microseconds since the epoch.
pub fn parse(s: &str) -> Option<i64> {
    let s = s.trim();
    let with_zone = if s.ends_with('Z') || s.ends_with('z') || has_offset(s) {
        s.to_string()
    } else {
        format!("{s}Z")
    };
    OffsetDateTime::parse(&with_zone, &Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000) as i64)
}

fn has_offset(s: &str) -> bool {
    // "+hh:mm" or "-hh:mm" after the time part.
    let b = s.as_bytes();
    b.len() > 6 && (b[b.len() - 6] == b'+' || b[b.len() - 6] == b'-') && b[b.len() - 3] == b':'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let m = 1_795_284_000_123_456; // 2026-11-21T...
        let k = keystone(m);
        assert!(k.ends_with(".123456Z"), "{k}");
        assert_eq!(parse(&k), Some(m));
        assert_eq!(parse(&seconds_z(m)), Some(m - 123_456));
        assert_eq!(parse("2026-11-21T18:00:00"), parse("2026-11-21T18:00:00Z"));
        assert_eq!(
            parse("2026-11-21T19:00:00+01:00"),
            parse("2026-11-21T18:00:00Z")
        );
        assert_eq!(parse("not a time"), None);
    }
}
