//! FHIR logical ids (`[A-Za-z0-9\-\.]{1,64}`), parsed once at the boundary.

use super::ParseError;
use std::fmt;

/// A FHIR logical id. Holding one means it is safe to place in an upstream URL path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FhirId(String);

impl FhirId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for FhirId {
    type Error = ParseError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        if value.is_empty() {
            return Err(ParseError::value("must not be empty"));
        }
        if value.len() > 64 {
            return Err(ParseError::value(format!(
                "is {} characters long; a FHIR id has at most 64",
                value.chars().count()
            )));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            // The value itself is not echoed: it may be a path-traversal attempt or an identifier.
            return Err(ParseError::value(
                "is not a FHIR id: only letters, digits, '-' and '.' are allowed",
            ));
        }
        Ok(FhirId(value.to_owned()))
    }
}

impl fmt::Display for FhirId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fhir_id_accepts_letters_digits_dashes_and_dots_up_to_64() {
        assert!(FhirId::try_from("example-group-id").is_ok());
        assert!(FhirId::try_from("11ec-d16a-c763b73e-98e8-a31715e6a2bf").is_ok());
        assert!(FhirId::try_from("a.b-C9").is_ok());
        assert!(FhirId::try_from("a".repeat(64).as_str()).is_ok());
    }

    #[test]
    fn a_fhir_id_refuses_traversal_encoded_slashes_spaces_and_65_characters() {
        for bad in [
            "",
            "../",
            "..%2F",
            "a b",
            "a/b",
            "a_b",
            "é",
            "a".repeat(65).as_str(),
        ] {
            assert!(FhirId::try_from(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
