//! Kick-off requests: the Redox envelope, and the parameter reading shared with the FHIR-native forms.

use super::meta::{Meta, read_meta};
use super::reader::Reader;
use crate::domain::params::{
    PatientReference, TypeFilter, parse_associated_data, parse_elements, split_type_filters,
};
use crate::domain::{
    ExportKickoff, ExportKind, ExportLevel, FhirId, Issue, IssueCode, KickoffParams, Param,
    ResourceType,
};
use serde_json::{Map, Value};

/// A kick-off envelope that passed every destination-independent check.
#[derive(Debug, Clone)]
pub struct KickoffEnvelope {
    pub meta: Meta,
    pub kickoff: ExportKickoff,
}

/// Where the request came in: which operation and, for Group export, the `{groupId}` of the path.
#[derive(Debug, Clone, Copy)]
pub struct RouteTarget<'a> {
    pub kind: ExportKind,
    pub path_group_id: Option<&'a str>,
}

impl RouteTarget<'_> {
    /// The export level, or an issue when the path's group id is not a FHIR id.
    pub fn level(&self, issues: &mut Vec<Issue>) -> Option<ExportLevel> {
        match self.kind {
            ExportKind::Group => {
                let raw = self.path_group_id.unwrap_or_default();
                match FhirId::try_from(raw) {
                    Ok(id) => Some(ExportLevel::Group(id)),
                    Err(e) => {
                        issues.push(e.at("groupId"));
                        None
                    }
                }
            }
            ExportKind::Patient => Some(ExportLevel::Patient),
            ExportKind::System => Some(ExportLevel::System),
        }
    }
}

/// Parses a Redox kick-off envelope, reporting every problem at once.
pub fn parse_envelope(
    body: &Value,
    target: RouteTarget<'_>,
) -> Result<KickoffEnvelope, Vec<Issue>> {
    let mut issues = Vec::new();
    let Value::Object(obj) = body else {
        return Err(vec![Issue::general(
            IssueCode::Structure,
            "The request body must be a JSON object (a Redox envelope with Meta and the kick-off fields).",
        )]);
    };
    let level = target.level(&mut issues);
    let mut r = Reader::new(obj, "", &mut issues);

    let mut known: Vec<&str> = vec!["Meta"];
    known.extend(Param::ALL.iter().map(|p| p.as_str()));
    if target.kind == ExportKind::Group {
        known.push("id");
    } else if !r.has("id") {
        // `"id": null` is tolerated on Patient and system export: null means absent.
        known.push("id");
    }
    r.reject_unknown(&known, "this envelope");

    let meta = read_meta(&mut r, target.kind);

    if target.kind == ExportKind::Group
        && let Some(id) = r.req_str("id")
    {
        match FhirId::try_from(id) {
            Err(e) => r.issue(e.at("id")),
            Ok(id) => {
                if let Some(ExportLevel::Group(path_id)) = &level
                    && &id != path_id
                {
                    r.issue(Issue::at(
                        IssueCode::Value,
                        "id",
                        "must equal the {groupId} of the request path",
                    ));
                }
            }
        }
    }

    let params = read_params(&mut r, target.kind);
    match level {
        Some(level) if issues.is_empty() => Ok(KickoffEnvelope {
            meta,
            kickoff: ExportKickoff { level, params },
        }),
        _ => Err(issues),
    }
}

/// Reads the kick-off parameters of an object whose keys are the wire names (an envelope, or a
/// FHIR-native request normalised into one), then checks the rules that join two fields.
pub fn read_params(r: &mut Reader<'_, '_>, kind: ExportKind) -> KickoffParams {
    let mut p = KickoffParams {
        output_format: r.parse(Param::OutputFormat.as_str()),
        since: r.parse(Param::Since.as_str()),
        until: r.parse(Param::Until.as_str()),
        types: r.parse(Param::Type.as_str()),
        elements: r.parse_with(Param::Elements.as_str(), parse_elements),
        patients: None,
        include_associated_data: r
            .parse_with(Param::IncludeAssociatedData.as_str(), parse_associated_data),
        type_filters: None,
        organize_output_by: r.parse::<ResourceType>(Param::OrganizeOutputBy.as_str()),
        allow_partial_manifests: r.opt_bool(Param::AllowPartialManifests.as_str()),
    };
    p.type_filters = read_type_filters(r);
    p.patients = read_patients(r, kind);

    if let (Some(since), Some(until)) = (&p.since, &p.until)
        && until.at() <= since.at()
    {
        r.issue(Issue::at(
            IssueCode::Value,
            "_until",
            "must be later than _since",
        ));
    }
    if let (Some(types), Some(filters)) = (&p.types, &p.type_filters) {
        for f in filters {
            if !types.contains(f.resource_type.as_str()) {
                r.issue(Issue::at(
                    IssueCode::Value,
                    "_typeFilter",
                    format!("filters {} but _type does not include it", f.resource_type),
                ));
            }
        }
    }
    p
}

fn read_type_filters(r: &mut Reader<'_, '_>) -> Option<Vec<TypeFilter>> {
    let key = Param::TypeFilter.as_str();
    // A FHIR-native request may repeat `_typeFilter`; it arrives here as an array.
    let items: Vec<(String, &str)> = match r.value(key)? {
        Value::Array(values) => {
            let mut items = Vec::new();
            for (i, v) in values.iter().enumerate() {
                match v.as_str() {
                    Some(s) => items.extend(
                        split_type_filters(s)
                            .into_iter()
                            .map(|it| (key.to_owned(), it)),
                    ),
                    None => r.issue(Issue::at(
                        IssueCode::Structure,
                        format!("{key}[{i}]"),
                        "must be a string",
                    )),
                }
            }
            items
        }
        _ => split_type_filters(r.opt_str(key)?)
            .into_iter()
            .map(|it| (key.to_owned(), it))
            .collect(),
    };
    let mut filters = Vec::new();
    let mut ok = true;
    for (path, item) in items {
        match TypeFilter::try_from(item) {
            Ok(f) => filters.push(f),
            Err(e) => {
                ok = false;
                r.issue(e.at(path));
            }
        }
    }
    ok.then_some(filters)
}

fn read_patients(r: &mut Reader<'_, '_>, kind: ExportKind) -> Option<Vec<PatientReference>> {
    let key = Param::Patient.as_str();
    let value = r.value(key)?;
    if kind == ExportKind::System {
        r.issue(Issue::at(
            IssueCode::NotSupported,
            key,
            "cannot be used with system-level export: use Patient or Group export",
        ));
        return None;
    }
    let raw: Vec<(String, &str)> = match value {
        Value::String(s) => s
            .split(',')
            .map(|item| (key.to_owned(), item.trim()))
            .collect(),
        Value::Array(values) => {
            let mut raw = Vec::new();
            for (i, v) in values.iter().enumerate() {
                match v.as_str() {
                    Some(s) => raw.push((format!("{key}[{i}]"), s)),
                    None => r.issue(Issue::at(
                        IssueCode::Structure,
                        format!("{key}[{i}]"),
                        "must be a string Patient/{id}",
                    )),
                }
            }
            raw
        }
        _ => {
            r.issue(Issue::at(
                IssueCode::Structure,
                key,
                "must be a Patient reference string or an array of them",
            ));
            return None;
        }
    };
    if raw.is_empty() {
        r.issue(Issue::at(
            IssueCode::Value,
            key,
            "must name at least one patient",
        ));
        return None;
    }
    let mut refs: Vec<PatientReference> = Vec::new();
    let mut ok = true;
    for (path, s) in raw {
        match PatientReference::try_from(s) {
            Ok(p) if refs.contains(&p) => {
                ok = false;
                r.issue(Issue::at(
                    IssueCode::Value,
                    path,
                    "names a patient already listed",
                ));
            }
            Ok(p) => refs.push(p),
            Err(e) => {
                ok = false;
                r.issue(e.at(path));
            }
        }
    }
    ok.then_some(refs)
}

/// Builds a normalised parameter object from FHIR-native input (query string or `Parameters`), so the
/// same reader checks all three forms. Repeated list parameters are joined with commas as the IG says.
pub fn normalise_native(pairs: &[(String, Value)]) -> NativeParams {
    let mut map = Map::new();
    let mut unknown = Vec::new();
    let mut issues = Vec::new();
    for (name, value) in pairs {
        let Some(param) = Param::from_wire(name) else {
            if !unknown.contains(name) {
                unknown.push(name.clone());
            }
            continue;
        };
        let value = match (param, value) {
            (Param::AllowPartialManifests, Value::String(s)) if s == "true" => Value::Bool(true),
            (Param::AllowPartialManifests, Value::String(s)) if s == "false" => Value::Bool(false),
            (_, v) => v.clone(),
        };
        let key = param.as_str().to_owned();
        match (param, map.remove(&key)) {
            (_, None) => {
                map.insert(key, value);
            }
            (
                Param::Type | Param::Elements | Param::IncludeAssociatedData,
                Some(Value::String(prev)),
            ) => {
                let joined = match value.as_str() {
                    Some(next) => Value::String(format!("{prev},{next}")),
                    None => value,
                };
                map.insert(key, joined);
            }
            (Param::TypeFilter | Param::Patient, Some(prev)) => {
                let mut list = match prev {
                    Value::Array(a) => a,
                    other => vec![other],
                };
                list.push(value);
                map.insert(key, Value::Array(list));
            }
            (_, Some(prev)) => {
                // A single-valued parameter given twice is ambiguous: refuse rather than guess.
                if !issues
                    .iter()
                    .any(|i: &Issue| i.expression.as_deref() == Some(param.as_str()))
                {
                    issues.push(Issue::at(
                        IssueCode::Value,
                        param.as_str(),
                        "may be given only once",
                    ));
                }
                map.insert(key, prev);
            }
        }
    }
    NativeParams {
        map,
        unknown,
        issues,
    }
}

/// FHIR-native parameters in the envelope's shape, plus what did not fit it.
#[derive(Debug, Default)]
pub struct NativeParams {
    /// The recognised parameters, keyed by wire name.
    pub map: Map<String, Value>,
    /// Parameter names the gateway does not know (refused, or dropped under lenient handling).
    pub unknown: Vec<String>,
    /// Problems already found while normalising (a single-valued parameter repeated).
    pub issues: Vec<Issue>,
}
