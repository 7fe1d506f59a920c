//! `_outputFormat`: the NDJSON media types Bulk Data servers accept.

use super::ParseError;
use super::resource_type::shorten;

/// An accepted `_outputFormat` value, kept in the partner's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Default)]
pub enum OutputFormat {
    #[serde(rename = "application/fhir+ndjson")]
    #[default]
    FhirNdjson,
    #[serde(rename = "application/ndjson")]
    Ndjson,
    #[serde(rename = "ndjson")]
    NdjsonShort,
}

impl OutputFormat {
    pub const ALL: [OutputFormat; 3] = [
        OutputFormat::FhirNdjson,
        OutputFormat::Ndjson,
        OutputFormat::NdjsonShort,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::FhirNdjson => "application/fhir+ndjson",
            OutputFormat::Ndjson => "application/ndjson",
            OutputFormat::NdjsonShort => "ndjson",
        }
    }
}

impl TryFrom<&str> for OutputFormat {
    type Error = ParseError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        OutputFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == value)
            .ok_or_else(|| {
                ParseError::not_supported(format!(
                    "'{}' is not a supported output format: use application/fhir+ndjson, application/ndjson or ndjson",
                    shorten(value)
                ))
            })
    }
}
