//! The validated kick-off request: what to export and with which parameters.

use super::params::{AssociatedData, ElementPath, PatientReference, TypeFilter};
use super::{FhirId, FhirInstant, OutputFormat, ResourceType, ResourceTypes};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which `$export` operation: Group, Patient or system level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportLevel {
    Group(FhirId),
    Patient,
    System,
}

/// The export level without its group id: what a profile supports and what the job store records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExportKind {
    #[serde(rename = "group-export")]
    Group,
    #[serde(rename = "patient-export")]
    Patient,
    #[serde(rename = "system-export")]
    System,
}

impl ExportKind {
    /// The Redox `Meta.EventType` for this kind of kick-off.
    pub fn event_type(self) -> &'static str {
        match self {
            ExportKind::Group => "group-export",
            ExportKind::Patient => "patient-export",
            ExportKind::System => "system-export",
        }
    }

    pub fn from_event_type(event: &str) -> Option<ExportKind> {
        match event {
            "group-export" => Some(ExportKind::Group),
            "patient-export" => Some(ExportKind::Patient),
            "system-export" => Some(ExportKind::System),
            _ => None,
        }
    }
}

impl ExportLevel {
    pub fn kind(&self) -> ExportKind {
        match self {
            ExportLevel::Group(_) => ExportKind::Group,
            ExportLevel::Patient => ExportKind::Patient,
            ExportLevel::System => ExportKind::System,
        }
    }

    pub fn group_id(&self) -> Option<&FhirId> {
        match self {
            ExportLevel::Group(id) => Some(id),
            _ => None,
        }
    }

    /// The path after the FHIR base: `Group/{id}/$export`, `Patient/$export` or `$export`.
    pub fn operation_path(&self) -> String {
        match self {
            ExportLevel::Group(id) => format!("Group/{id}/$export"),
            ExportLevel::Patient => "Patient/$export".to_owned(),
            ExportLevel::System => "$export".to_owned(),
        }
    }
}

/// A kick-off parameter, by its wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Param {
    #[serde(rename = "_outputFormat")]
    OutputFormat,
    #[serde(rename = "_since")]
    Since,
    #[serde(rename = "_until")]
    Until,
    #[serde(rename = "_type")]
    Type,
    #[serde(rename = "_elements")]
    Elements,
    #[serde(rename = "patient")]
    Patient,
    #[serde(rename = "includeAssociatedData")]
    IncludeAssociatedData,
    #[serde(rename = "_typeFilter")]
    TypeFilter,
    #[serde(rename = "organizeOutputBy")]
    OrganizeOutputBy,
    #[serde(rename = "allowPartialManifests")]
    AllowPartialManifests,
}

impl Param {
    /// Every parameter, in the order the gateway writes them upstream.
    pub const ALL: [Param; 10] = [
        Param::OutputFormat,
        Param::Since,
        Param::Until,
        Param::Type,
        Param::Elements,
        Param::Patient,
        Param::IncludeAssociatedData,
        Param::TypeFilter,
        Param::OrganizeOutputBy,
        Param::AllowPartialManifests,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Param::OutputFormat => "_outputFormat",
            Param::Since => "_since",
            Param::Until => "_until",
            Param::Type => "_type",
            Param::Elements => "_elements",
            Param::Patient => "patient",
            Param::IncludeAssociatedData => "includeAssociatedData",
            Param::TypeFilter => "_typeFilter",
            Param::OrganizeOutputBy => "organizeOutputBy",
            Param::AllowPartialManifests => "allowPartialManifests",
        }
    }

    pub fn from_wire(name: &str) -> Option<Param> {
        Param::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kick-off parameters, each already parsed; `None` means the partner did not send it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KickoffParams {
    pub output_format: Option<OutputFormat>,
    pub since: Option<FhirInstant>,
    pub until: Option<FhirInstant>,
    pub types: Option<ResourceTypes>,
    pub elements: Option<Vec<ElementPath>>,
    pub patients: Option<Vec<PatientReference>>,
    pub include_associated_data: Option<Vec<AssociatedData>>,
    pub type_filters: Option<Vec<TypeFilter>>,
    pub organize_output_by: Option<ResourceType>,
    pub allow_partial_manifests: Option<bool>,
}

impl KickoffParams {
    /// The parameters present, in wire order.
    pub fn present(&self) -> Vec<Param> {
        Param::ALL.into_iter().filter(|p| self.has(*p)).collect()
    }

    pub fn has(&self, param: Param) -> bool {
        match param {
            Param::OutputFormat => self.output_format.is_some(),
            Param::Since => self.since.is_some(),
            Param::Until => self.until.is_some(),
            Param::Type => self.types.is_some(),
            Param::Elements => self.elements.is_some(),
            Param::Patient => self.patients.is_some(),
            Param::IncludeAssociatedData => self.include_associated_data.is_some(),
            Param::TypeFilter => self.type_filters.is_some(),
            Param::OrganizeOutputBy => self.organize_output_by.is_some(),
            Param::AllowPartialManifests => self.allow_partial_manifests.is_some(),
        }
    }

    /// Drops a parameter (lenient handling of one the destination does not support).
    pub fn remove(&mut self, param: Param) {
        match param {
            Param::OutputFormat => self.output_format = None,
            Param::Since => self.since = None,
            Param::Until => self.until = None,
            Param::Type => self.types = None,
            Param::Elements => self.elements = None,
            Param::Patient => self.patients = None,
            Param::IncludeAssociatedData => self.include_associated_data = None,
            Param::TypeFilter => self.type_filters = None,
            Param::OrganizeOutputBy => self.organize_output_by = None,
            Param::AllowPartialManifests => self.allow_partial_manifests = None,
        }
    }

    /// The parameter's values in wire form, one string per query-string occurrence.
    pub fn wire_values(&self, param: Param) -> Vec<String> {
        let join = |items: Vec<String>| vec![items.join(",")];
        match param {
            Param::OutputFormat => self
                .output_format
                .iter()
                .map(|f| f.as_str().to_owned())
                .collect(),
            Param::Since => self.since.iter().map(|i| i.as_str().to_owned()).collect(),
            Param::Until => self.until.iter().map(|i| i.as_str().to_owned()).collect(),
            Param::Type => self.types.iter().map(ResourceTypes::to_wire).collect(),
            Param::Elements => self
                .elements
                .as_ref()
                .map(|e| join(e.iter().map(ToString::to_string).collect()))
                .unwrap_or_default(),
            Param::Patient => self
                .patients
                .iter()
                .flatten()
                .map(PatientReference::reference)
                .collect(),
            Param::IncludeAssociatedData => self
                .include_associated_data
                .as_ref()
                .map(|a| join(a.iter().map(|v| v.as_str().to_owned()).collect()))
                .unwrap_or_default(),
            Param::TypeFilter => self
                .type_filters
                .iter()
                .flatten()
                .map(ToString::to_string)
                .collect(),
            Param::OrganizeOutputBy => self
                .organize_output_by
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            Param::AllowPartialManifests => self
                .allow_partial_manifests
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }
}

/// A kick-off that passed every check the gateway can make without knowing the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportKickoff {
    pub level: ExportLevel,
    pub params: KickoffParams,
}
