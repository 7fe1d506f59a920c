//! FHIR R4 resource type names and comma-separated lists of them (`_type`).

use super::ParseError;
use std::fmt;

/// Every concrete resource type defined by FHIR R4 (4.0.1): 146 of them.
pub const R4_RESOURCE_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// A FHIR R4 resource type name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType(&'static str);

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl TryFrom<&str> for ResourceType {
    type Error = ParseError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        R4_RESOURCE_TYPES
            .iter()
            .find(|t| **t == value)
            .map(|t| ResourceType(t))
            .ok_or_else(|| {
                ParseError::value(format!(
                    "'{}' is not a FHIR R4 resource type",
                    shorten(value)
                ))
            })
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A non-empty, duplicate-free list of resource types, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceTypes(Vec<ResourceType>);

impl ResourceTypes {
    pub fn iter(&self) -> impl Iterator<Item = ResourceType> + '_ {
        self.0.iter().copied()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|t| t.0 == name)
    }

    /// The comma-separated wire form.
    pub fn to_wire(&self) -> String {
        self.0.iter().map(|t| t.0).collect::<Vec<_>>().join(",")
    }
}

impl TryFrom<&str> for ResourceTypes {
    type Error = ParseError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let mut types: Vec<ResourceType> = Vec::new();
        for item in value.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(ParseError::value(
                    "has an empty item: give resource type names separated by single commas",
                ));
            }
            let t = ResourceType::try_from(item)?;
            if types.contains(&t) {
                return Err(ParseError::value(format!("names '{t}' more than once")));
            }
            types.push(t);
        }
        Ok(ResourceTypes(types))
    }
}

/// Cuts an echoed value so an error body or a log record never carries a long attacker-chosen string,
/// and drops control characters (a NUL cannot be stored in PostgreSQL text, nor belongs in a message).
pub fn shorten(value: &str) -> String {
    const MAX: usize = 40;
    let clean: String = value.chars().filter(|c| !c.is_control()).collect();
    if clean.chars().count() <= MAX {
        clean
    } else {
        let cut: String = clean.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r4_has_146_resource_types_without_repeats() {
        let mut sorted = R4_RESOURCE_TYPES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 146);
    }

    #[test]
    fn a_type_list_keeps_order_and_refuses_empties_duplicates_and_unknown_names() {
        let types = ResourceTypes::try_from("Patient,Encounter,Observation").unwrap();
        assert_eq!(types.to_wire(), "Patient,Encounter,Observation");
        assert!(ResourceTypes::try_from("Patient,,Observation").is_err());
        assert!(ResourceTypes::try_from("Patient,Patient").is_err());
        assert!(ResourceTypes::try_from("Patient,Bogus").is_err());
        assert!(ResourceTypes::try_from("").is_err());
        assert!(ResourceTypes::try_from("patient").is_err());
    }
}
