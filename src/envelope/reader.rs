//! Reads fields out of a JSON object, recording every problem with its path instead of stopping at the first.

use crate::domain::{Issue, IssueCode, ParseError};
use serde_json::{Map, Value};

/// A view of one JSON object that collects issues as fields are read.
pub struct Reader<'a, 'i> {
    obj: &'a Map<String, Value>,
    prefix: String,
    issues: &'i mut Vec<Issue>,
}

/// The JSON type name a partner will recognise in a message.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a, 'i> Reader<'a, 'i> {
    pub fn new(
        obj: &'a Map<String, Value>,
        prefix: impl Into<String>,
        issues: &'i mut Vec<Issue>,
    ) -> Self {
        Reader {
            obj,
            prefix: prefix.into(),
            issues,
        }
    }

    /// The expression naming `key` inside this object.
    pub fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    pub fn issue(&mut self, issue: Issue) {
        self.issues.push(issue);
    }

    pub fn issues(&mut self) -> &mut Vec<Issue> {
        self.issues
    }

    /// The raw value, with JSON `null` read as absent.
    pub fn value(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.value(key).is_some()
    }

    fn wrong_type(&mut self, key: &str, expected: &str, got: &Value) {
        let path = self.path(key);
        self.issues.push(Issue::at(
            IssueCode::Structure,
            path,
            format!("must be {expected}, not {}", kind(got)),
        ));
    }

    pub fn opt_str(&mut self, key: &str) -> Option<&'a str> {
        match self.value(key)? {
            Value::String(s) => Some(s.as_str()),
            other => {
                self.wrong_type(key, "a string", other);
                None
            }
        }
    }

    /// A string that must be present; `required` when missing or null.
    pub fn req_str(&mut self, key: &str) -> Option<&'a str> {
        if !self.has(key) {
            let path = self.path(key);
            self.issues
                .push(Issue::at(IssueCode::Required, path, "is required"));
            return None;
        }
        self.opt_str(key)
    }

    pub fn opt_bool(&mut self, key: &str) -> Option<bool> {
        match self.value(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong_type(key, "a boolean (true or false)", other);
                None
            }
        }
    }

    pub fn opt_object(&mut self, key: &str) -> Option<&'a Map<String, Value>> {
        match self.value(key)? {
            Value::Object(o) => Some(o),
            other => {
                self.wrong_type(key, "an object", other);
                None
            }
        }
    }

    pub fn opt_array(&mut self, key: &str) -> Option<&'a Vec<Value>> {
        match self.value(key)? {
            Value::Array(a) => Some(a),
            other => {
                self.wrong_type(key, "an array", other);
                None
            }
        }
    }

    /// Reads an optional string and parses it into a domain type, recording the parser's complaint.
    pub fn parse<T>(&mut self, key: &str) -> Option<T>
    where
        T: for<'s> TryFrom<&'s str, Error = ParseError>,
    {
        self.parse_with(key, |s| T::try_from(s))
    }

    /// Reads an optional string and parses it with `f`.
    pub fn parse_with<T>(
        &mut self,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Option<T> {
        let s = self.opt_str(key)?;
        match f(s) {
            Ok(v) => Some(v),
            Err(e) => {
                let path = self.path(key);
                self.issues.push(e.at(path));
                None
            }
        }
    }

    /// Records a `structure` issue for every key not in `known`.
    pub fn reject_unknown(&mut self, known: &[&str], what: &str) {
        let unknown: Vec<String> = self
            .obj
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| self.path(k))
            .collect();
        for path in unknown {
            self.issues.push(Issue::at(
                IssueCode::Structure,
                path,
                format!("is not a field of {what}"),
            ));
        }
    }
}
