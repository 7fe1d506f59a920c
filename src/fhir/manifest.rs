//! The Bulk Data manifest: checked when it arrives, kept as the EHR sent it (every page), and rewritten
//! for the partner so that every field the EHR sent reaches it and no EHR URL does.
//!
//! A manifest may come in pages (`link` with `relation: "next"`, Bulk Data v2+), and while the export
//! runs an EHR may answer a 202 with a partial manifest (v3 `allowPartialManifests`). The gateway keeps
//! the pages it has followed, in order, as one JSON array; file ids number every file of every page in
//! order (page 0's `output`, `error`, `deleted`, then page 1's…), so they are unique across pages and
//! stay put as pages are added.

use serde_json::{Map, Value};
use std::collections::HashMap;

/// One file a manifest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub section: &'static str,
    /// The page it is listed on (0 is the status answer itself).
    pub page: usize,
    /// Empty when the EHR left `type` out (organized output, error and deleted files in v4).
    pub resource_type: String,
    pub url: String,
}

/// The file lists of a manifest, in file-id order within a page.
pub const SECTIONS: [&str; 3] = ["output", "error", "deleted"];

/// Most manifest pages followed for one export.
pub const MAX_PAGES: usize = 1000;

fn check_items(obj: &Map<String, Value>, section: &str, type_required: bool) -> Result<(), String> {
    let items = match obj.get(section) {
        None | Some(Value::Null) if section != "output" => return Ok(()),
        Some(Value::Array(items)) => items,
        _ => return Err(format!("`{section}` must be an array")),
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("{section}[{i}]");
        let o = item
            .as_object()
            .ok_or_else(|| format!("`{at}` must be an object"))?;
        match o.get("type") {
            Some(Value::String(_)) => {}
            None if !type_required => {}
            _ => return Err(format!("`{at}.type` must be a string")),
        }
        let url = o
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("`{at}.url` must be a string"))?;
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => return Err(format!("`{at}.url` must be an absolute http(s) URL")),
        }
        if let Some(count) = o.get("count")
            && !count.is_u64()
        {
            return Err(format!("`{at}.count` must be a non-negative integer"));
        }
    }
    Ok(())
}

/// Checks one manifest page's shape (complete or partial); the message names the first problem.
///
/// `output[].type` may be left out when the output is organized (`outputOrganizedBy`), and
/// `error[].type` and `deleted[].type` may always be; `request` is optional (deprecated in v4);
/// `extension` is the STU3 object or the STU4 array.
pub fn check(manifest: &Value) -> Result<(), String> {
    let obj = manifest
        .as_object()
        .ok_or("the manifest must be a JSON object")?;
    if !obj.get("transactionTime").is_some_and(Value::is_string) {
        return Err("`transactionTime` must be a string".into());
    }
    if obj.get("request").is_some_and(|r| !r.is_string()) {
        return Err("`request` must be a string".into());
    }
    if !obj
        .get("requiresAccessToken")
        .is_some_and(Value::is_boolean)
    {
        return Err("`requiresAccessToken` must be a boolean".into());
    }
    let organized = obj.get("outputOrganizedBy").is_some_and(Value::is_string);
    if obj.get("outputOrganizedBy").is_some_and(|o| !o.is_string()) {
        return Err("`outputOrganizedBy` must be a string".into());
    }
    check_items(obj, "output", !organized)?;
    check_items(obj, "error", false)?;
    check_items(obj, "deleted", false)?;
    if obj
        .get("extension")
        .is_some_and(|e| !e.is_object() && !e.is_array())
    {
        return Err("`extension` must be an object or an array".into());
    }
    match obj.get("link") {
        None => {}
        Some(Value::Array(links)) => {
            for (i, link) in links.iter().enumerate() {
                let ok = link.get("relation").is_some_and(Value::is_string)
                    && link.get("url").is_some_and(Value::is_string);
                if !ok {
                    return Err(format!(
                        "`link[{i}]` must have a string `relation` and `url`"
                    ));
                }
            }
        }
        Some(_) => return Err("`link` must be an array".into()),
    }
    Ok(())
}

/// The stored pages: a JSON array of pages, or (jobs completed before pages were kept) one object.
pub fn pages(stored: &str) -> Result<Vec<Value>, String> {
    match serde_json::from_str(stored) {
        Ok(Value::Array(pages)) => Ok(pages),
        Ok(page @ Value::Object(_)) => Ok(vec![page]),
        Ok(_) => Err("stored manifest is neither a page nor a list of pages".into()),
        Err(e) => Err(format!("stored manifest unreadable: {e}")),
    }
}

/// The `next` page's URL, as the EHR gave it.
pub fn next_link(page: &Value) -> Option<&str> {
    page.get("link")?
        .as_array()?
        .iter()
        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))?
        .get("url")?
        .as_str()
}

fn section_items<'a>(page: &'a Value, section: &str) -> impl Iterator<Item = &'a Value> {
    page.get(section)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// How many files one page lists.
pub fn file_count(page: &Value) -> usize {
    SECTIONS
        .iter()
        .map(|s| section_items(page, s).count())
        .sum()
}

/// Every file of every page, in file-id order.
pub fn files(pages: &[Value]) -> Vec<FileRef> {
    let mut out = Vec::new();
    for (page_no, page) in pages.iter().enumerate() {
        for section in SECTIONS {
            for item in section_items(page, section) {
                let text = |k: &str| {
                    item.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                out.push(FileRef {
                    section,
                    page: page_no,
                    resource_type: text("type"),
                    url: text("url"),
                });
            }
        }
    }
    out
}

/// Whether the EHR said its files need its access token.
pub fn requires_access_token(pages: &[Value]) -> bool {
    pages.first().is_none_or(|p| {
        p.get("requiresAccessToken")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    })
}

/// What the rewrite needs to know about the gateway and the EHR.
pub struct Rewrite<'a> {
    /// The gateway's own kick-off URL, with the partner's parameters.
    pub request: &'a str,
    /// Whether the gateway wants the partner's credentials for its file URLs.
    pub requires_access_token: bool,
    /// The id of the page's first file.
    pub first_file: usize,
    /// The gateway URL of file `n`.
    pub file_url: &'a dyn Fn(usize) -> String,
    /// The gateway URL of the next page, when there is one.
    pub next: Option<String>,
    /// Whether a text names the EHR (its origin or a file host).
    pub names_ehr: &'a dyn Fn(&str) -> bool,
    /// EHR URLs the gateway has a URL of its own for (the status URL, files, pages).
    pub known: &'a HashMap<String, String>,
}

impl Rewrite<'_> {
    /// A value with every text that names the EHR replaced by the gateway's URL for it, or removed.
    /// Object members whose key names the EHR (STU3 extension URLs) go; so does an array's object
    /// that loses its `url` (an extension whose URL was the EHR's means nothing without it).
    fn scrub(&self, value: Value) -> Option<Value> {
        match value {
            Value::String(s) if (self.names_ehr)(&s) => {
                self.known.get(&s).cloned().map(Value::String)
            }
            Value::Array(items) => Some(Value::Array(
                items
                    .into_iter()
                    .filter_map(|item| {
                        let had_url = item.get("url").is_some();
                        let item = self.scrub(item)?;
                        (!had_url || item.get("url").is_some()).then_some(item)
                    })
                    .collect(),
            )),
            Value::Object(map) => Some(Value::Object(
                map.into_iter()
                    .filter(|(k, _)| !(self.names_ehr)(k))
                    .filter_map(|(k, v)| self.scrub(v).map(|v| (k, v)))
                    .collect(),
            )),
            other => Some(other),
        }
    }

    /// The page as the partner sees it: every field the EHR sent, every file URL the gateway's,
    /// `request` the gateway's kick-off, `link` the gateway's next page, and no text naming the EHR.
    pub fn page(&self, page: &Value) -> Value {
        // File ids follow the sections' order, whatever order the keys are visited in.
        let mut starts = HashMap::new();
        let mut next_id = self.first_file;
        for section in SECTIONS {
            starts.insert(section, next_id);
            next_id += section_items(page, section).count();
        }
        let mut out = Map::new();
        let Some(obj) = page.as_object() else {
            return Value::Object(out);
        };
        for (key, value) in obj {
            if (self.names_ehr)(key) {
                continue;
            }
            let rewritten = match key.as_str() {
                "request" => Some(Value::String(self.request.to_owned())),
                "requiresAccessToken" => Some(Value::Bool(self.requires_access_token)),
                "link" => None,
                section if SECTIONS.contains(&section) => {
                    let mut n = starts.get(section).copied().unwrap_or_default();
                    let items = value.as_array().cloned().unwrap_or_default();
                    Some(Value::Array(
                        items
                            .into_iter()
                            .map(|item| {
                                let mut item = self
                                    .scrub(item)
                                    .unwrap_or_else(|| Value::Object(Map::new()));
                                if let Some(o) = item.as_object_mut() {
                                    o.insert("url".into(), Value::String((self.file_url)(n)));
                                }
                                n += 1;
                                item
                            })
                            .collect(),
                    ))
                }
                _ => self.scrub(value.clone()),
            };
            if let Some(v) = rewritten {
                out.insert(key.clone(), v);
            }
        }
        out.insert("request".into(), Value::String(self.request.to_owned()));
        out.insert(
            "requiresAccessToken".into(),
            Value::Bool(self.requires_access_token),
        );
        if let Some(next) = &self.next {
            out.insert(
                "link".into(),
                serde_json::json!([{"relation": "next", "url": next}]),
            );
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest() -> Value {
        json!({
            "transactionTime": "2025-07-22T23:59:59Z",
            "request": "https://ehr.example/fhir/Group/g/$export?_type=Patient",
            "requiresAccessToken": false,
            "output": [{"type": "Patient", "url": "https://s3.example/a?X-Amz-Signature=secret", "count": 3}],
            "error": [{"type": "OperationOutcome", "url": "https://ehr.example/files/err"}],
            "link": [{"relation": "next", "url": "https://ehr.example/next"}],
            "extension": [
                {"url": "https://ehr.example/fhir/StructureDefinition/job", "valueString": "x"},
                {"url": "http://hl7.org/fhir/StructureDefinition/x", "valueUrl": "https://ehr.example/status/1"},
                {"url": "http://hl7.org/fhir/StructureDefinition/y", "valueInteger": 3}
            ],
            "vendorNote": {"statusUrl": "https://ehr.example/status/1", "hint": "see ehr.example/docs", "n": 1}
        })
    }

    fn names_ehr(s: &str) -> bool {
        s.contains("ehr.example") || s.contains("s3.example")
    }

    #[test]
    fn a_manifest_is_rewritten_to_gateway_urls_only_and_keeps_every_other_field() {
        let m = manifest();
        check(&m).unwrap();
        let known = HashMap::from([(
            "https://ehr.example/status/1".to_owned(),
            "https://gw/status/j".to_owned(),
        )]);
        let out = Rewrite {
            request: "https://gw/fhir/R4/x/Development/Group/g/$export?_type=Patient",
            requires_access_token: true,
            first_file: 0,
            file_url: &|n| format!("https://gw/f/{n}"),
            next: Some("https://gw/page/1".into()),
            names_ehr: &names_ehr,
            known: &known,
        }
        .page(&m);
        let text = out.to_string();
        assert!(!names_ehr(&text) && !text.contains("secret"), "{text}");
        assert_eq!(out["output"][0]["url"], "https://gw/f/0");
        assert_eq!(out["output"][0]["count"], 3);
        assert_eq!(out["error"][0]["url"], "https://gw/f/1");
        assert_eq!(out["requiresAccessToken"], true);
        assert_eq!(out["link"][0]["url"], "https://gw/page/1");
        assert_eq!(out["extension"].as_array().unwrap().len(), 2);
        assert_eq!(out["extension"][0]["valueUrl"], "https://gw/status/j");
        assert_eq!(out["vendorNote"]["statusUrl"], "https://gw/status/j");
        assert_eq!(out["vendorNote"]["n"], 1);
        assert!(out["vendorNote"].get("hint").is_none());
        assert_eq!(files(&[m.clone(), m]).len(), 4);
    }

    #[test]
    fn organized_output_may_leave_type_out_and_extension_may_be_an_object() {
        let m = json!({
            "transactionTime": "2025-07-22T23:59:59Z",
            "requiresAccessToken": true,
            "outputOrganizedBy": "Patient",
            "output": [{"url": "https://ehr.example/f/1"}],
            "deleted": [{"url": "https://ehr.example/f/2"}],
            "extension": {"http://example.org/ext": true}
        });
        check(&m).unwrap();
        let mut unorganized = m.clone();
        unorganized
            .as_object_mut()
            .unwrap()
            .remove("outputOrganizedBy");
        assert!(check(&unorganized).is_err());
    }

    #[test]
    fn a_manifest_missing_what_the_ig_requires_is_refused() {
        let mut m = manifest();
        m.as_object_mut().unwrap().remove("output");
        assert!(check(&m).is_err());
        let mut m = manifest();
        m["output"][0]["url"] = json!("/relative");
        assert!(check(&m).is_err());
        let mut m = manifest();
        m["output"][0]["count"] = json!(-1);
        assert!(check(&m).is_err());
        let mut m = manifest();
        m["link"] = json!([{"relation": "next"}]);
        assert!(check(&m).is_err());
    }

    #[test]
    fn stored_pages_read_back_whether_one_object_or_a_list() {
        assert_eq!(pages(r#"{"output":[]}"#).unwrap().len(), 1);
        assert_eq!(pages(r#"[{"output":[]},{"output":[]}]"#).unwrap().len(), 2);
        assert!(pages("3").is_err());
        assert_eq!(next_link(&manifest()), Some("https://ehr.example/next"));
    }
}
