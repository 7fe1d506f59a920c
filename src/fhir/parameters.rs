//! FHIR `Parameters`: read from a FHIR-native POST kick-off, written for an upstream POST kick-off.

use crate::domain::{Issue, IssueCode, KickoffParams, Param};
use serde_json::{Map, Value, json};

/// The `value[x]` names a kick-off parameter may use.
const VALUE_KEYS: &[&str] = &[
    "valueString",
    "valueCode",
    "valueInstant",
    "valueBoolean",
    "valueReference",
    "valueUri",
    "valueUrl",
];

/// Flattens a `Parameters` body into (name, value) pairs, as a query string would give them.
pub fn read_parameters(body: &Map<String, Value>) -> Result<Vec<(String, Value)>, Vec<Issue>> {
    let mut issues = Vec::new();
    if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(vec![Issue::at(
            IssueCode::Structure,
            "resourceType",
            "must be 'Parameters'",
        )]);
    }
    for key in body.keys() {
        if !["resourceType", "parameter", "id", "meta"].contains(&key.as_str()) {
            issues.push(Issue::at(
                IssueCode::Structure,
                key.clone(),
                "is not a field of Parameters",
            ));
        }
    }
    let mut pairs = Vec::new();
    let list = match body.get("parameter") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => {
            issues.push(Issue::at(
                IssueCode::Structure,
                "parameter",
                "must be an array",
            ));
            return Err(issues);
        }
    };
    for (i, p) in list.iter().enumerate() {
        let path = format!("parameter[{i}]");
        let Some(obj) = p.as_object() else {
            issues.push(Issue::at(IssueCode::Structure, path, "must be an object"));
            continue;
        };
        let Some(name) = obj.get("name").and_then(Value::as_str) else {
            issues.push(Issue::at(
                IssueCode::Required,
                format!("{path}.name"),
                "is required",
            ));
            continue;
        };
        let values: Vec<(&String, &Value)> =
            obj.iter().filter(|(k, _)| k.starts_with("value")).collect();
        let [(key, value)] = values.as_slice() else {
            issues.push(Issue::at(
                IssueCode::Structure,
                format!("{path}.value[x]"),
                "must hold exactly one value[x]",
            ));
            continue;
        };
        if !VALUE_KEYS.contains(&key.as_str()) {
            issues.push(Issue::at(
                IssueCode::Structure,
                format!("{path}.{key}"),
                "is not a value type a kick-off parameter takes",
            ));
            continue;
        }
        let value = if key.as_str() == "valueReference" {
            match value.get("reference").and_then(Value::as_str) {
                Some(r) => Value::String(r.to_owned()),
                None => {
                    issues.push(Issue::at(
                        IssueCode::Required,
                        format!("{path}.valueReference.reference"),
                        "is required",
                    ));
                    continue;
                }
            }
        } else {
            (*value).clone()
        };
        pairs.push((name.to_owned(), value));
    }
    if issues.is_empty() {
        Ok(pairs)
    } else {
        Err(issues)
    }
}

/// Writes kick-off parameters as a `Parameters` resource for an upstream POST.
pub fn write_parameters(params: &KickoffParams) -> Value {
    let mut parameter = Vec::new();
    for p in params.present() {
        for v in params.wire_values(p) {
            let entry = match p {
                Param::Patient => json!({"name": p.as_str(), "valueReference": {"reference": v}}),
                Param::Since | Param::Until => json!({"name": p.as_str(), "valueInstant": v}),
                Param::AllowPartialManifests => {
                    json!({"name": p.as_str(), "valueBoolean": v == "true"})
                }
                _ => json!({"name": p.as_str(), "valueString": v}),
            };
            parameter.push(entry);
        }
    }
    json!({"resourceType": "Parameters", "parameter": parameter})
}
