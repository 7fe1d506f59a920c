//! Validation problems found at the boundary, each naming the field it is about.

use serde::Serialize;

/// A FHIR `IssueType` code (the subset the gateway emits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueCode {
    Invalid,
    Structure,
    Required,
    Value,
    TooLong,
    NotSupported,
    NotFound,
    Conflict,
    Security,
    Forbidden,
    Throttled,
    Transient,
    Timeout,
    Exception,
    Processing,
    Informational,
}

impl IssueCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueCode::Invalid => "invalid",
            IssueCode::Structure => "structure",
            IssueCode::Required => "required",
            IssueCode::Value => "value",
            IssueCode::TooLong => "too-long",
            IssueCode::NotSupported => "not-supported",
            IssueCode::NotFound => "not-found",
            IssueCode::Conflict => "conflict",
            IssueCode::Security => "security",
            IssueCode::Forbidden => "forbidden",
            IssueCode::Throttled => "throttled",
            IssueCode::Transient => "transient",
            IssueCode::Timeout => "timeout",
            IssueCode::Exception => "exception",
            IssueCode::Processing => "processing",
            IssueCode::Informational => "informational",
        }
    }

    /// Parses a code received from an upstream OperationOutcome; unknown codes become `processing`.
    pub fn from_wire(code: &str) -> IssueCode {
        match code {
            "invalid" => IssueCode::Invalid,
            "structure" => IssueCode::Structure,
            "required" => IssueCode::Required,
            "value" => IssueCode::Value,
            "too-long" => IssueCode::TooLong,
            "not-supported" => IssueCode::NotSupported,
            "not-found" => IssueCode::NotFound,
            "conflict" => IssueCode::Conflict,
            "security" => IssueCode::Security,
            "forbidden" => IssueCode::Forbidden,
            "throttled" => IssueCode::Throttled,
            "transient" => IssueCode::Transient,
            "timeout" => IssueCode::Timeout,
            "exception" => IssueCode::Exception,
            "informational" => IssueCode::Informational,
            _ => IssueCode::Processing,
        }
    }
}

/// FHIR issue severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Information,
}

/// One problem with a request, ready to become an `OperationOutcome.issue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueCode,
    pub diagnostics: String,
    /// FHIRPath-like location of the offending field (`Meta.DataModel`, `_type`, `patient[1]`).
    pub expression: Option<String>,
}

impl Issue {
    /// An error about a named field. A diagnostic phrased as a predicate ("is required") or starting
    /// with a quoted value gets the field's name in front, so it reads on its own.
    pub fn at(
        code: IssueCode,
        expression: impl Into<String>,
        diagnostics: impl Into<String>,
    ) -> Self {
        let expression = expression.into();
        let diagnostics = name_field(&expression, diagnostics.into());
        Issue {
            severity: Severity::Error,
            code,
            diagnostics,
            expression: Some(expression),
        }
    }

    /// An error about the request as a whole.
    pub fn general(code: IssueCode, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    /// A non-fatal note, e.g. a parameter dropped under lenient handling.
    pub fn warning(
        code: IssueCode,
        expression: impl Into<String>,
        diagnostics: impl Into<String>,
    ) -> Self {
        let expression = expression.into();
        let diagnostics = name_field(&expression, diagnostics.into());
        Issue {
            severity: Severity::Warning,
            code,
            diagnostics,
            expression: Some(expression),
        }
    }
}

fn name_field(expression: &str, diagnostics: String) -> String {
    match diagnostics.chars().next() {
        Some(c) if c.is_lowercase() => format!("{expression} {diagnostics}"),
        Some('\'') => format!("{expression}: {diagnostics}"),
        _ => diagnostics,
    }
}

/// What a domain newtype's parser reports: the code and a sentence; the caller adds the field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub code: IssueCode,
    pub message: String,
}

impl ParseError {
    pub fn value(message: impl Into<String>) -> Self {
        ParseError {
            code: IssueCode::Value,
            message: message.into(),
        }
    }

    pub fn not_supported(message: impl Into<String>) -> Self {
        ParseError {
            code: IssueCode::NotSupported,
            message: message.into(),
        }
    }

    /// Attaches the field path, turning the parse error into a request issue.
    pub fn at(self, expression: impl Into<String>) -> Issue {
        Issue::at(self.code, expression, self.message)
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}
