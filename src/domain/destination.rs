//! Routing keys: the destination slug and the Redox environment flag.

use super::ParseError;
use super::resource_type::shorten;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A destination's slug: lowercase letters, digits and '-', 1 to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DestinationSlug(String);

impl DestinationSlug {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for DestinationSlug {
    type Error = ParseError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let ok = (1..=64).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(DestinationSlug(value.to_owned()))
        } else {
            Err(ParseError::value(
                "is not a destination slug: 1 to 64 lowercase letters, digits or '-'",
            ))
        }
    }
}

impl<'de> Deserialize<'de> for DestinationSlug {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DestinationSlug::try_from(s.as_str()).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for DestinationSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Redox's environment flag; case-sensitive, as Redox spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EnvironmentFlag {
    Development,
    Staging,
    Production,
}

impl EnvironmentFlag {
    pub const ALL: [EnvironmentFlag; 3] = [
        EnvironmentFlag::Development,
        EnvironmentFlag::Staging,
        EnvironmentFlag::Production,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentFlag::Development => "Development",
            EnvironmentFlag::Staging => "Staging",
            EnvironmentFlag::Production => "Production",
        }
    }
}

impl TryFrom<&str> for EnvironmentFlag {
    type Error = ParseError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        EnvironmentFlag::ALL
            .into_iter()
            .find(|e| e.as_str() == value)
            .ok_or_else(|| {
                ParseError::value(format!(
                    "'{}' is not an environment: use Development, Staging or Production (case-sensitive)",
                    shorten(value)
                ))
            })
    }
}

impl fmt::Display for EnvironmentFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
