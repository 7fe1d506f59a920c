//! The Bulk Data completion manifest: checked when it arrives, rewritten so every URL is the gateway's.

use serde_json::{Map, Value};

/// One file a manifest lists, numbered in order across `output`, then `error`, then `deleted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub section: &'static str,
    pub resource_type: String,
    pub url: String,
}

const SECTIONS: [&str; 3] = ["output", "error", "deleted"];

fn check_items(obj: &Map<String, Value>, section: &str, required: bool) -> Result<(), String> {
    let items = match obj.get(section) {
        None | Some(Value::Null) if !required => return Ok(()),
        Some(Value::Array(items)) => items,
        _ => return Err(format!("`{section}` must be an array")),
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("{section}[{i}]");
        let o = item
            .as_object()
            .ok_or_else(|| format!("`{at}` must be an object"))?;
        if !o.get("type").is_some_and(Value::is_string) {
            return Err(format!("`{at}.type` must be a string"));
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

/// Checks a manifest's shape; the message names the first problem.
pub fn check(manifest: &Value) -> Result<(), String> {
    let obj = manifest
        .as_object()
        .ok_or("the manifest must be a JSON object")?;
    if !obj.get("transactionTime").is_some_and(Value::is_string) {
        return Err("`transactionTime` must be a string".into());
    }
    if !obj.get("request").is_some_and(Value::is_string) {
        return Err("`request` must be a string".into());
    }
    if !obj
        .get("requiresAccessToken")
        .is_some_and(Value::is_boolean)
    {
        return Err("`requiresAccessToken` must be a boolean".into());
    }
    check_items(obj, "output", true)?;
    check_items(obj, "error", false)?;
    check_items(obj, "deleted", false)?;
    if obj.get("extension").is_some_and(|e| !e.is_object()) {
        return Err("`extension` must be an object".into());
    }
    if obj.get("link").is_some_and(|l| !l.is_array()) {
        return Err("`link` must be an array".into());
    }
    Ok(())
}

/// The files a (checked) manifest lists, in gateway file-id order.
pub fn files(manifest: &Value) -> Vec<FileRef> {
    let mut out = Vec::new();
    for section in SECTIONS {
        for item in manifest
            .get(section)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push(FileRef {
                section,
                resource_type: item
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                url: item
                    .get("url")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
    }
    out
}

/// Whether the manifest said files need the access token.
pub fn requires_access_token(manifest: &Value) -> bool {
    manifest
        .get("requiresAccessToken")
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

/// The manifest as the partner sees it: every file URL is `file_url(n)`, `request` is the gateway's
/// kick-off URL, and `requiresAccessToken` is true (the partner authenticates to the gateway).
/// Upstream paging links are left out: the gateway does not serve further manifest pages.
pub fn rewrite(manifest: &Value, request: &str, file_url: impl Fn(usize) -> String) -> Value {
    let mut out = manifest.clone();
    let mut n = 0;
    for section in SECTIONS {
        if let Some(items) = out.get_mut(section).and_then(Value::as_array_mut) {
            for item in items {
                item["url"] = Value::String(file_url(n));
                n += 1;
            }
        }
    }
    if let Some(obj) = out.as_object_mut() {
        obj.insert("requiresAccessToken".into(), Value::Bool(true));
        obj.insert("request".into(), Value::String(request.to_owned()));
        obj.remove("link");
    }
    out
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
            "link": [{"relation": "next", "url": "https://ehr.example/next"}]
        })
    }

    #[test]
    fn a_manifest_is_rewritten_to_gateway_urls_only() {
        let m = manifest();
        check(&m).unwrap();
        let out = rewrite(
            &m,
            "https://gw/fhir/R4/x/Development/Group/g/$export",
            |n| format!("https://gw/f/{n}"),
        );
        let text = out.to_string();
        assert!(
            !text.contains("ehr.example")
                && !text.contains("s3.example")
                && !text.contains("secret")
        );
        assert_eq!(out["output"][0]["url"], "https://gw/f/0");
        assert_eq!(out["error"][0]["url"], "https://gw/f/1");
        assert_eq!(out["requiresAccessToken"], true);
        assert_eq!(files(&m).len(), 2);
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
    }
}
