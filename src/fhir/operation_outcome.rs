//! `OperationOutcome`: every error the gateway returns, and the informational body of a FHIR-native 202.

use crate::domain::{Issue, IssueCode, Severity};
use serde::{Deserialize, Serialize};

/// A FHIR R4 OperationOutcome with the fields the gateway uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OperationOutcome {
    #[serde(rename = "resourceType")]
    pub resource_type: String,
    pub issue: Vec<OutcomeIssue>,
}

/// `OperationOutcome.issue`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutcomeIssue {
    pub severity: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub diagnostics: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub expression: Vec<String>,
}

fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Information => "information",
    }
}

impl From<&Issue> for OutcomeIssue {
    fn from(i: &Issue) -> Self {
        OutcomeIssue {
            severity: severity_str(i.severity).to_owned(),
            code: i.code.as_str().to_owned(),
            diagnostics: Some(i.diagnostics.clone()),
            expression: i.expression.iter().cloned().collect(),
        }
    }
}

impl OutcomeIssue {
    /// This issue read back as the gateway's own (an error), its diagnostics passed through `say`.
    pub fn to_issue(&self, say: impl Fn(Option<&str>) -> String) -> Issue {
        Issue {
            severity: Severity::Error,
            code: IssueCode::from_wire(&self.code),
            diagnostics: say(self.diagnostics.as_deref()),
            expression: self.expression.first().cloned(),
        }
    }
}

impl OperationOutcome {
    pub fn from_issues(issues: &[Issue]) -> Self {
        OperationOutcome {
            resource_type: "OperationOutcome".to_owned(),
            issue: issues.iter().map(OutcomeIssue::from).collect(),
        }
    }

    /// The informational outcome a Bulk Data server sends with a 202 kick-off answer.
    pub fn accepted(message: &str, warnings: &[Issue]) -> Self {
        let mut issue = vec![OutcomeIssue {
            severity: "information".to_owned(),
            code: IssueCode::Informational.as_str().to_owned(),
            diagnostics: Some(message.to_owned()),
            expression: Vec::new(),
        }];
        issue.extend(warnings.iter().map(OutcomeIssue::from));
        OperationOutcome {
            resource_type: "OperationOutcome".to_owned(),
            issue,
        }
    }
}
