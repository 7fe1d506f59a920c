//! The list-valued kick-off parameters: `_elements`, `_typeFilter`, `patient`, `includeAssociatedData`.

use super::resource_type::shorten;
use super::{FhirId, ParseError, ResourceType};
use std::fmt;

/// One `_elements` item: `element` or `Type.element`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementPath {
    pub resource_type: Option<ResourceType>,
    pub element: String,
}

impl fmt::Display for ElementPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.resource_type {
            Some(t) => write!(f, "{t}.{}", self.element),
            None => f.write_str(&self.element),
        }
    }
}

fn is_element_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_alphanumeric())
        && s.len() <= 64
}

/// Parses a comma-separated `_elements` value.
pub fn parse_elements(value: &str) -> Result<Vec<ElementPath>, ParseError> {
    let mut out: Vec<ElementPath> = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(ParseError::value(
                "has an empty item: give element paths separated by single commas",
            ));
        }
        let path = match item.split_once('.') {
            Some((t, e)) => {
                let resource_type = ResourceType::try_from(t)?;
                if !is_element_name(e) {
                    return Err(ParseError::value(format!(
                        "'{}' is not a [Type.]element path",
                        shorten(item)
                    )));
                }
                ElementPath {
                    resource_type: Some(resource_type),
                    element: e.to_owned(),
                }
            }
            None if is_element_name(item) => ElementPath {
                resource_type: None,
                element: item.to_owned(),
            },
            None => {
                return Err(ParseError::value(format!(
                    "'{}' is not a [Type.]element path",
                    shorten(item)
                )));
            }
        };
        if out.contains(&path) {
            return Err(ParseError::value(format!("names '{path}' more than once")));
        }
        out.push(path);
    }
    Ok(out)
}

/// One `_typeFilter` item: `Type?query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeFilter {
    pub resource_type: ResourceType,
    pub query: String,
}

impl fmt::Display for TypeFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}?{}", self.resource_type, self.query)
    }
}

impl TryFrom<&str> for TypeFilter {
    type Error = ParseError;

    fn try_from(item: &str) -> Result<Self, Self::Error> {
        let Some((t, query)) = item.split_once('?') else {
            return Err(ParseError::value(format!(
                "'{}' is not a Type?query search",
                shorten(item)
            )));
        };
        let resource_type = ResourceType::try_from(t)?;
        if query.is_empty() || query.chars().any(|c| c.is_control() || c == ' ') {
            return Err(ParseError::value(format!(
                "'{}' needs a search query after '?', without spaces",
                shorten(item)
            )));
        }
        Ok(TypeFilter {
            resource_type,
            query: query.to_owned(),
        })
    }
}

/// Splits a `_typeFilter` string into its `Type?query` items.
///
/// A query may itself hold commas (`code=a,b`), so a comma only starts a new item when what follows
/// looks like `Type?`.
pub fn split_type_filters(value: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut start = 0;
    for (i, _) in value.match_indices(',') {
        let rest = &value[i + 1..];
        let starts_item = rest.split_once('?').is_some_and(|(t, _)| {
            !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_alphabetic())
                && t.as_bytes()[0].is_ascii_uppercase()
        });
        if starts_item {
            items.push(&value[start..i]);
            start = i + 1;
        }
    }
    items.push(&value[start..]);
    items
}

/// A `patient` value: a reference `Patient/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientReference(FhirId);

impl PatientReference {
    pub fn id(&self) -> &FhirId {
        &self.0
    }

    /// The reference as sent upstream.
    pub fn reference(&self) -> String {
        format!("Patient/{}", self.0)
    }
}

impl TryFrom<&str> for PatientReference {
    type Error = ParseError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        // Never echo the value: it is a patient identifier.
        let id = value
            .strip_prefix("Patient/")
            .ok_or_else(|| ParseError::value("is not a FHIR reference of the form Patient/{id}"))?;
        FhirId::try_from(id).map(PatientReference).map_err(|_| {
            ParseError::value(
                "is not a FHIR reference of the form Patient/{id}: the id is not a FHIR id",
            )
        })
    }
}

/// One `includeAssociatedData` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssociatedData {
    LatestProvenanceResources,
    RelevantProvenanceResources,
    /// A server-defined value, which the IG requires to start with `_`.
    Custom(String),
}

impl AssociatedData {
    /// Whether this is a server-defined (`_`) value rather than one the IG names.
    pub fn is_custom(&self) -> bool {
        matches!(self, AssociatedData::Custom(_))
    }

    pub fn as_str(&self) -> &str {
        match self {
            AssociatedData::LatestProvenanceResources => "LatestProvenanceResources",
            AssociatedData::RelevantProvenanceResources => "RelevantProvenanceResources",
            AssociatedData::Custom(s) => s,
        }
    }
}

impl TryFrom<&str> for AssociatedData {
    type Error = ParseError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        match value {
            "LatestProvenanceResources" => Ok(AssociatedData::LatestProvenanceResources),
            "RelevantProvenanceResources" => Ok(AssociatedData::RelevantProvenanceResources),
            custom
                if custom.len() > 1
                    && custom.len() <= 64
                    && custom.starts_with('_')
                    && custom[1..].bytes().all(|b| {
                        b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'
                    }) =>
            {
                Ok(AssociatedData::Custom(custom.to_owned()))
            }
            other => Err(ParseError::value(format!(
                "'{}' is not LatestProvenanceResources, RelevantProvenanceResources or a custom value starting with '_'",
                shorten(other)
            ))),
        }
    }
}

/// Parses a comma-separated `includeAssociatedData` value.
pub fn parse_associated_data(value: &str) -> Result<Vec<AssociatedData>, ParseError> {
    let mut out: Vec<AssociatedData> = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(ParseError::value(
                "has an empty item: give values separated by single commas",
            ));
        }
        let v = AssociatedData::try_from(item)?;
        if out.contains(&v) {
            return Err(ParseError::value(format!(
                "names '{}' more than once",
                v.as_str()
            )));
        }
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_filters_split_only_where_a_new_type_begins() {
        assert_eq!(
            split_type_filters("Observation?code=a,b&status=final,MedicationRequest?status=active"),
            vec![
                "Observation?code=a,b&status=final",
                "MedicationRequest?status=active"
            ]
        );
        assert_eq!(
            split_type_filters("Patient?active=true"),
            vec!["Patient?active=true"]
        );
    }

    #[test]
    fn element_paths_are_element_or_type_dot_element() {
        assert!(parse_elements("id,Patient.name,meta").is_ok());
        assert!(parse_elements("Patient.").is_err());
        assert!(parse_elements("Bogus.name").is_err());
        assert!(parse_elements("name,,id").is_err());
        assert!(parse_elements("Name").is_err());
    }

    #[test]
    fn patient_references_must_be_patient_slash_id() {
        assert!(PatientReference::try_from("Patient/123").is_ok());
        assert!(PatientReference::try_from("123").is_err());
        assert!(PatientReference::try_from("Patient/../x").is_err());
        assert!(PatientReference::try_from("Group/1").is_err());
    }

    #[test]
    fn associated_data_accepts_the_ig_values_and_underscore_custom_ones() {
        assert_eq!(
            parse_associated_data("LatestProvenanceResources,_mine")
                .unwrap()
                .len(),
            2
        );
        assert!(parse_associated_data("Everything").is_err());
        assert!(parse_associated_data("_").is_err());
    }
}
