//! FHIR `instant`: `YYYY-MM-DDThh:mm:ss(.sss)(Z|±hh:mm)`, with a zone, to the second at least.

use super::ParseError;
use chrono::{DateTime, FixedOffset};
use std::fmt;

/// A FHIR instant, keeping the partner's spelling so the upstream receives it unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirInstant {
    text: String,
    at: DateTime<FixedOffset>,
}

impl FhirInstant {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn at(&self) -> DateTime<FixedOffset> {
        self.at
    }
}

const EXPECTED: &str =
    "must be a FHIR instant such as 2024-01-01T00:00:00Z or 2024-01-01T00:00:00.000+05:00";

fn has_instant_shape(s: &[u8]) -> bool {
    let digits =
        |r: std::ops::Range<usize>| s.get(r).is_some_and(|b| b.iter().all(u8::is_ascii_digit));
    if s.len() < 20
        || !digits(0..4)
        || s[4] != b'-'
        || !digits(5..7)
        || s[7] != b'-'
        || !digits(8..10)
        || s[10] != b'T'
        || !digits(11..13)
        || s[13] != b':'
        || !digits(14..16)
        || s[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut i = 19;
    if s[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 9 {
            return false;
        }
    }
    match &s[i..] {
        [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()),
        _ => false,
    }
}

impl TryFrom<&str> for FhirInstant {
    type Error = ParseError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        if !has_instant_shape(value.as_bytes()) {
            return Err(ParseError::value(EXPECTED));
        }
        let at = DateTime::parse_from_rfc3339(value).map_err(|_| {
            ParseError::value(format!("{EXPECTED}; this one is not a real date and time"))
        })?;
        Ok(FhirInstant {
            text: value.to_owned(),
            at,
        })
    }
}

impl fmt::Display for FhirInstant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_needs_seconds_and_a_zone() {
        for ok in [
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00.123Z",
            "2024-01-01T00:00:00+05:30",
            "2024-02-29T23:59:59.999999999-08:00",
        ] {
            assert!(FhirInstant::try_from(ok).is_ok(), "{ok}");
        }
        for bad in [
            "2024-01-01",
            "2024-01-01T00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01 00:00:00Z",
            "2024-01-01t00:00:00z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0530",
            "yesterday",
        ] {
            assert!(FhirInstant::try_from(bad).is_err(), "{bad}");
        }
    }
}
