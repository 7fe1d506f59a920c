//! The OpenAPI 3.1 document of every partner, admin and operations route, served at `/openapi.json`
//! and committed as `schemas/openapi.json` (a test fails when the two differ; regenerate with
//! `cargo run -- openapi > schemas/openapi.json`).
//!
//! Schemas come from the code: the admin API's response types derive `utoipa::ToSchema`, and the
//! envelope and OperationOutcome schemas are the committed JSON Schemas in `schemas/`, which the fixture
//! tests already hold every envelope the gateway reads or writes against. OpenAPI 3.1 speaks JSON
//! Schema 2020-12, so they are embedded as they are.

use crate::api::admin::views::{AttemptView, JobDetail, JobPage, JobView, LogDetail, LogPage};
use crate::observe::msglog::{LogRecord, RecordKind};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

/// The committed JSON Schemas, by component name.
const FILE_SCHEMAS: [(&str, &str); 6] = [
    ("Meta", include_str!("../../schemas/meta.schema.json")),
    (
        "GroupExportEnvelope",
        include_str!("../../schemas/group-export.schema.json"),
    ),
    (
        "PatientExportEnvelope",
        include_str!("../../schemas/patient-export.schema.json"),
    ),
    (
        "SystemExportEnvelope",
        include_str!("../../schemas/system-export.schema.json"),
    ),
    (
        "SystemExportResponse",
        include_str!("../../schemas/system-export-response.schema.json"),
    ),
    (
        "OperationOutcome",
        include_str!("../../schemas/operation-outcome.schema.json"),
    ),
];

fn file_name(component: &str) -> Option<&'static str> {
    Some(match component {
        "Meta" => "meta.schema.json",
        "GroupExportEnvelope" => "group-export.schema.json",
        "PatientExportEnvelope" => "patient-export.schema.json",
        "SystemExportEnvelope" => "system-export.schema.json",
        "SystemExportResponse" => "system-export-response.schema.json",
        "OperationOutcome" => "operation-outcome.schema.json",
        _ => return None,
    })
}

/// Rewrites `"$ref": "meta.schema.json"` (file-relative) to `#/components/schemas/Meta`.
fn relink(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some((name, _)) = FILE_SCHEMAS
                    .iter()
                    .find(|(name, _)| file_name(name) == Some(r.as_str()))
            {
                *r = format!("#/components/schemas/{name}");
            }
            map.remove("$schema");
            map.remove("$id");
            for v in map.values_mut() {
                relink(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(relink),
        _ => {}
    }
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn code_schemas(out: &mut Map<String, Value>) {
    fn add<T: ToSchema>(out: &mut Map<String, Value>) {
        let mut nested = Vec::new();
        T::schemas(&mut nested);
        for (name, schema) in nested {
            out.insert(name, serde_json::to_value(schema).unwrap_or(Value::Null));
        }
        out.insert(
            T::name().into_owned(),
            serde_json::to_value(T::schema()).unwrap_or(Value::Null),
        );
    }
    add::<RecordKind>(out);
    add::<LogRecord>(out);
    add::<LogPage>(out);
    add::<LogDetail>(out);
    add::<JobView>(out);
    add::<AttemptView>(out);
    add::<JobPage>(out);
    add::<JobDetail>(out);
}

const FHIR_JSON: &str = "application/fhir+json";

/// An OperationOutcome response.
fn outcome(description: &str) -> Value {
    json!({
        "description": description,
        "content": { FHIR_JSON: { "schema": schema_ref("OperationOutcome") } }
    })
}

/// The error answers every partner route can give.
fn partner_errors(extra: &[(&str, &str)]) -> Map<String, Value> {
    let mut r = Map::new();
    for (status, why) in [
        ("400", "The request is invalid; every problem is an issue with its expression."),
        ("401", "No or bad credentials."),
        ("403", "The source may not use this destination or environment."),
        ("404", "No such destination, environment or job."),
        ("405", "The route does not take this method."),
        ("406", "The Accept header rules out JSON."),
        ("408", "The request did not arrive in time."),
        ("413", "The body is too large."),
        ("429", "Too many requests (the source's budget, the destination's cap, or the EHR); see Retry-After."),
        ("502", "The EHR failed, answered with something unusable, or refused the gateway's credentials."),
        ("503", "The job store is unavailable."),
        ("504", "The EHR did not answer in time."),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        r.insert(status.to_owned(), outcome(why));
    }
    r.insert(
        "default".to_owned(),
        outcome("Any other failure, as an OperationOutcome."),
    );
    r
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description,
            "schema": { "type": "string", "minLength": 1 } })
}

fn destination_params() -> Vec<Value> {
    vec![
        path_param(
            "destinationSlug",
            "The destination's slug, as configured in [[destinations]].",
        ),
        json!({ "name": "environmentFlag", "in": "path", "required": true,
                "description": "Development, Staging or Production.",
                "schema": { "type": "string", "enum": ["Development", "Staging", "Production"] } }),
    ]
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

/// The FHIR-native query parameters of a kick-off.
fn native_kickoff_params() -> Vec<Value> {
    let text = json!({ "type": "string" });
    vec![
        json!({ "name": "Prefer", "in": "header", "required": true,
                "description": "respond-async (required by the Bulk Data IG); may add handling=lenient.",
                "schema": { "type": "string", "enum": ["respond-async", "respond-async, handling=lenient"] } }),
        query(
            "_outputFormat",
            "application/fhir+ndjson (or ndjson, application/ndjson).",
            text.clone(),
        ),
        query(
            "_since",
            "FHIR instant: resources changed since.",
            json!({ "type": "string", "format": "date-time" }),
        ),
        query(
            "_until",
            "FHIR instant: resources changed before.",
            json!({ "type": "string", "format": "date-time" }),
        ),
        query("_type", "Comma-separated resource types.", text.clone()),
        query(
            "_elements",
            "Comma-separated elements, optionally type-qualified.",
            text.clone(),
        ),
        json!({ "name": "_typeFilter", "in": "query", "required": false, "explode": true,
                "description": "FHIR search queries, one per parameter.",
                "schema": { "type": "array", "items": { "type": "string" } } }),
        query(
            "includeAssociatedData",
            "Comma-separated associated data codes.",
            text.clone(),
        ),
        query(
            "organizeOutputBy",
            "A resource type to organise output by.",
            text.clone(),
        ),
        query(
            "allowPartialManifests",
            "true or false.",
            json!({ "type": "boolean" }),
        ),
    ]
}

fn kickoff_paths(
    paths: &mut Map<String, Value>,
    path: &str,
    envelope: &str,
    what: &str,
    group: bool,
) {
    let mut params = destination_params();
    if group {
        params.push(path_param("groupId", "The Group's FHIR id."));
    }
    let mut responses = partner_errors(&[
        (
            "409",
            "The same kick-off (Log ID) is being processed right now; retry shortly.",
        ),
        ("415", "The body is not JSON by its Content-Type."),
    ]);
    responses.insert(
        "202".to_owned(),
        json!({
            "description": "The EHR accepted the export. Content-Location is the gateway's status URL. An envelope gets a system-export-response envelope; a FHIR-native request an OperationOutcome.",
            "headers": {
                "Content-Location": { "schema": { "type": "string", "format": "uri" } },
                "X-Request-ID": { "description": "The Log ID.", "schema": { "type": "string", "format": "uuid" } }
            },
            "content": {
                "application/json": { "schema": schema_ref("SystemExportResponse") },
                FHIR_JSON: { "schema": schema_ref("OperationOutcome") }
            }
        }),
    );
    let mut native_params = params.clone();
    native_params.extend(native_kickoff_params());
    paths.insert(
        path.to_owned(),
        json!({
            "post": {
                "tags": ["kick-off"],
                "operationId": format!("{what}Post"),
                "summary": format!("Start a {what} export with a Redox-style envelope (or a FHIR Parameters resource)."),
                "parameters": params,
                "requestBody": {
                    "required": true,
                    "content": {
                        "application/json": { "schema": schema_ref(envelope) },
                        FHIR_JSON: { "schema": { "type": "object", "description": "A FHIR Parameters resource with the kick-off parameters (the only form that carries `patient`)." } }
                    }
                },
                "responses": responses.clone(),
                "security": [{ "partner": [] }, {}]
            },
            "get": {
                "tags": ["kick-off"],
                "operationId": format!("{what}Get"),
                "summary": format!("Start a {what} export the FHIR-native way: parameters in the query string."),
                "parameters": native_params,
                "responses": responses,
                "security": [{ "partner": [] }, {}]
            }
        }),
    );
}

fn get_op(
    tag: &str,
    id: &str,
    summary: &str,
    params: Vec<Value>,
    responses: Map<String, Value>,
    security: Value,
) -> Value {
    json!({ "tags": [tag], "operationId": id, "summary": summary, "parameters": params,
            "responses": responses, "security": security })
}

fn partner_paths(paths: &mut Map<String, Value>) {
    let base = "/fhir/R4/{destinationSlug}/{environmentFlag}";
    kickoff_paths(
        paths,
        &format!("{base}/Group/{{groupId}}/$export"),
        "GroupExportEnvelope",
        "groupExport",
        true,
    );
    kickoff_paths(
        paths,
        &format!("{base}/Patient/$export"),
        "PatientExportEnvelope",
        "patientExport",
        false,
    );
    kickoff_paths(
        paths,
        &format!("{base}/$export"),
        "SystemExportEnvelope",
        "systemExport",
        false,
    );
    let partner = json!([{ "partner": [] }, {}]);

    let mut job_params = destination_params();
    job_params.push(json!({ "name": "jobId", "in": "path", "required": true,
        "description": "The job id from the kick-off's Content-Location.",
        "schema": { "type": "string" } }));
    let manifest_schema = json!({
        "type": "object",
        "required": ["transactionTime", "request", "requiresAccessToken", "output"],
        "description": "Every field the EHR sent, with every URL the gateway's (files, pages, its own status and kick-off URLs) and nothing naming the EHR.",
        "properties": {
            "transactionTime": { "type": "string" },
            "request": { "type": "string", "description": "The gateway's kick-off URL with the partner's parameters." },
            "requiresAccessToken": { "type": "boolean", "description": "True exactly when the gateway wants partner credentials for its file URLs." },
            "outputOrganizedBy": { "type": "string" },
            "output": { "type": "array", "items": { "type": "object", "required": ["url"],
                "properties": { "type": { "type": "string" }, "url": { "type": "string" }, "count": { "type": "integer" } } } },
            "error": { "type": "array", "items": { "type": "object", "required": ["url"] } },
            "deleted": { "type": "array", "items": { "type": "object", "required": ["url"] } },
            "link": { "type": "array", "description": "`next`: the gateway URL of the manifest's next page.",
                "items": { "type": "object", "required": ["relation", "url"],
                    "properties": { "relation": { "type": "string" }, "url": { "type": "string" } } } }
        }
    });
    let in_progress = json!({
        "description": "In progress. Retry-After says when to ask again; X-Progress may say how far. Usually without a body; when the EHR sends a partial manifest (Bulk Data v3 allowPartialManifests), that manifest is the body (application/json, the same shape as the 200's), rewritten like a complete one, and its files download already.",
        "headers": {
            "Retry-After": { "schema": { "type": "integer" } },
            "X-Progress": { "schema": { "type": "string", "maxLength": 100 } }
        }
    });
    let mut status = partner_errors(&[]);
    status.insert("202".into(), in_progress.clone());
    status.insert("200".into(), json!({
        "description": "Complete: the Bulk Data manifest's first page, every URL the gateway's.",
        "content": { "application/json": { "schema": manifest_schema.clone() } }
    }));
    let mut page_params = job_params.clone();
    page_params.push(json!({ "name": "page", "in": "path", "required": true,
        "description": "The page number, from the previous page's `link` (`relation: next`); page 0 is the status answer.",
        "schema": { "type": "string" } }));
    let mut page = partner_errors(&[]);
    page.insert("202".into(), in_progress);
    page.insert("200".into(), json!({
        "description": "The page, rewritten like the first, with its own `next` where the EHR has one.",
        "content": { "application/json": { "schema": manifest_schema } }
    }));
    paths.insert(format!("{base}/export-manifest/{{jobId}}/{{page}}"), json!({
        "get": get_op("lifecycle", "exportManifestPage", "A further page of the export's manifest: the EHR's pages, followed by the gateway when the export completes.", page_params, page, partner.clone())
    }));
    let mut delete = partner_errors(&[]);
    delete.insert(
        "202".into(),
        outcome("The export and its files were deleted (upstream first)."),
    );
    let mut status_item = Map::new();
    status_item.insert(
        "get".into(),
        get_op(
            "lifecycle",
            "exportStatus",
            "The export's status: 202 while running, 200 with the manifest when done.",
            job_params.clone(),
            status,
            partner.clone(),
        ),
    );
    status_item.insert(
        "delete".into(),
        get_op(
            "lifecycle",
            "exportDelete",
            "Cancel or delete the export, upstream and in the gateway.",
            job_params.clone(),
            delete,
            partner.clone(),
        ),
    );
    paths.insert(
        format!("{base}/export-status/{{jobId}}"),
        Value::Object(status_item),
    );

    let mut file_params = job_params;
    file_params.push(json!({ "name": "fileId", "in": "path", "required": true,
        "description": "The file's index in the manifest (output, then error, then deleted).",
        "schema": { "type": "string" } }));
    file_params.push(json!({ "name": "Range", "in": "header", "required": false,
        "description": "Passed to the EHR.", "schema": { "type": "string" } }));
    let mut file = partner_errors(&[("416", "The Range is outside the file.")]);
    let ndjson = json!({ "application/fhir+ndjson": { "schema": { "type": "string" } } });
    file.insert(
        "200".into(),
        json!({ "description": "The file, streamed from the EHR.", "content": ndjson }),
    );
    file.insert(
        "206".into(),
        json!({ "description": "Part of the file (Range).", "content": ndjson }),
    );
    let mut attachment_params = file_params.clone();
    attachment_params.retain(|p| p["name"] != "fileId");
    attachment_params.insert(attachment_params.len() - 1, json!({ "name": "link", "in": "path", "required": true,
        "description": "The link the gateway put in place of the EHR's attachment URL in an export file: `{tag}/{path}` for a plain path under the EHR's FHIR base (it may hold `/`), or one sealed token.",
        "schema": { "type": "string" } }));
    paths.insert(format!("{base}/export-file/{{jobId}}/{{fileId}}"), json!({
        "get": get_op("lifecycle", "exportFile", "Download one file of an export through the gateway (a partial manifest's files while it runs). In DocumentReference, DiagnosticReport and Media files (and untyped, organized ones), attachment URLs on the EHR become the gateway's export-attachment links as the file streams; such a file is sent whole (Accept-Ranges: none).", file_params, file, partner.clone())
    }));
    let mut attachment = partner_errors(&[("416", "The Range is outside the attachment.")]);
    let any = json!({ "*/*": { "schema": { "type": "string", "format": "binary" } } });
    attachment.insert(
        "200".into(),
        json!({ "description": "The attachment, fetched from the EHR with the destination's credentials and streamed; Content-Type is the EHR's.", "content": any }),
    );
    attachment.insert(
        "206".into(),
        json!({ "description": "Part of the attachment (Range).", "content": any }),
    );
    paths.insert(format!("{base}/export-attachment/{{jobId}}/{{link}}"), json!({
        "get": get_op("lifecycle", "exportAttachment", "Download an attachment an export file pointed at (DocumentReference.content.attachment.url, DiagnosticReport.presentedForm.url, Media.content.url).", attachment_params, attachment, partner.clone())
    }));

    let mut metadata = partner_errors(&[]);
    metadata.insert(
        "200".into(),
        json!({ "description": "The destination's CapabilityStatement (what its EHR supports).",
        "content": { FHIR_JSON: { "schema": { "type": "object", "required": ["resourceType"],
            "properties": { "resourceType": { "const": "CapabilityStatement" } } } } } }),
    );
    paths.insert(format!("{base}/metadata"), json!({
        "get": get_op("capability", "capability", "The CapabilityStatement for this destination and environment: public, with rest.security naming the token endpoint when the gateway wants credentials.", destination_params(), metadata, json!([{}]))
    }));

    let mut smart = Map::new();
    smart.insert("200".into(), json!({ "description": "SMART configuration: the gateway's own token endpoint.",
        "content": { "application/json": { "schema": { "type": "object", "required": ["token_endpoint"],
            "properties": { "token_endpoint": { "type": "string" } } } } } }));
    smart.insert(
        "default".into(),
        outcome("A failure, as an OperationOutcome."),
    );
    paths.insert(format!("{base}/.well-known/smart-configuration"), json!({
        "get": get_op("auth", "smartConfiguration", "Where sources with registered keys get access tokens.", destination_params(), smart, json!([{}]))
    }));

    let oauth_error = |why: &str| {
        json!({ "description": why,
            "headers": { "Cache-Control": { "schema": { "const": "no-store" } } },
            "content": { "application/json": { "schema": { "type": "object", "required": ["error"],
                "properties": {
                    "error": { "enum": ["invalid_request", "invalid_client", "invalid_grant", "invalid_scope",
                        "unauthorized_client", "unsupported_grant_type", "temporarily_unavailable", "slow_down"] },
                    "error_description": { "type": "string" } } } } } })
    };
    let mut token = Map::new();
    token.insert("200".into(), json!({ "description": "A five-minute access token, with the scopes granted (the requested scopes narrowed to the source's, read and search only).",
        "content": { "application/json": { "schema": { "type": "object",
            "required": ["access_token", "token_type", "expires_in", "scope"],
            "properties": { "access_token": { "type": "string" }, "token_type": { "const": "bearer" },
                "expires_in": { "type": "integer" }, "scope": { "type": "string" } } } } } }));
    token.insert("400".into(), oauth_error("RFC 6749 §5.2: invalid_request (missing, repeated or malformed parameter; not a form), unsupported_grant_type, or invalid_scope (malformed, non-system, unknown-resource, write-only or not allowed for this client)."));
    token.insert("401".into(), oauth_error("invalid_client: the client assertion is not valid (unknown iss, jku not the registered JWKS URL, unknown kid, bad signature, wrong aud, expired, replayed jti)."));
    token.insert("413".into(), outcome("The body is larger than allowed."));
    let mut slow = oauth_error(
        "slow_down: more than [auth] token_rate_limit_per_minute token requests from this client address; Retry-After says when to try again.",
    );
    slow["headers"]["Retry-After"] = json!({ "schema": { "type": "integer" } });
    token.insert("429".into(), slow);
    token.insert(
        "503".into(),
        oauth_error("temporarily_unavailable: the gateway's store is unavailable."),
    );
    token.insert(
        "default".into(),
        oauth_error("Any other failure, in OAuth's error format."),
    );
    paths.insert("/auth/token".into(), json!({ "post": {
        "tags": ["auth"], "operationId": "token",
        "summary": "SMART Backend Services client_credentials grant with a signed client assertion (RS384 or ES384).",
        "requestBody": { "required": true, "content": { "application/x-www-form-urlencoded": { "schema": {
            "type": "object",
            "required": ["grant_type", "client_assertion_type", "client_assertion", "scope"],
            "properties": {
                "grant_type": { "const": "client_credentials" },
                "client_assertion_type": { "const": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" },
                "client_assertion": { "type": "string" },
                "scope": { "type": "string", "description": "Space-separated SMART system scopes: system/<Type|*>.read (v1) or system/<Type|*>.rs (v2)." }
            } } } } },
        "responses": token,
        "security": [{}]
    } }));
}

fn admin_paths(paths: &mut Map<String, Value>) {
    let admin = json!([{ "admin": [] }]);
    let errors = |extra: &[(&str, &str)]| {
        let mut r = Map::new();
        for (status, why) in [
            (
                "400",
                "A filter is unknown, repeated or has a bad value (named in issue.expression).",
            ),
            ("401", "No admin key, or not the admin key."),
            (
                "403",
                "A partner credential: the admin API takes only the [admin] key.",
            ),
            ("503", "The store is unavailable."),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            r.insert(status.to_owned(), outcome(why));
        }
        r.insert("default".into(), outcome("Any other failure."));
        r
    };
    let page = || {
        vec![
            query(
                "limit",
                "Page size, 1 to 500 (default 50).",
                json!({ "type": "integer", "minimum": 1, "maximum": 500 }),
            ),
            query(
                "offset",
                "Records to skip (default 0); `next` in the answer has the next page.",
                json!({ "type": "integer", "minimum": 0 }),
            ),
        ]
    };
    let text = json!({ "type": "string" });
    let mut log_params = vec![
        query("source", "The source id.", text.clone()),
        query("destination", "The destination slug.", text.clone()),
        query(
            "environment",
            "Development, Staging or Production.",
            text.clone(),
        ),
        query(
            "eventType",
            "group-export, patient-export, system-export, status-check, file-download, export-delete, capability, discovery, token.",
            text.clone(),
        ),
        query(
            "status",
            "The gateway's status class (2xx, 3xx, 4xx, 5xx) or one status (404).",
            json!({ "type": "string", "pattern": "^([1-5]xx|[1-5][0-9][0-9])$" }),
        ),
        query(
            "since",
            "From this time (RFC 3339).",
            json!({ "type": "string", "format": "date-time" }),
        ),
        query(
            "until",
            "Up to this time (RFC 3339).",
            json!({ "type": "string", "format": "date-time" }),
        ),
        query(
            "logId",
            "One Log ID.",
            json!({ "type": "string", "format": "uuid" }),
        ),
        query(
            "jobId",
            "One job.",
            json!({ "type": "string", "format": "uuid" }),
        ),
        query(
            "kind",
            "request (default): partner requests; upstream: calls to EHRs; all.",
            json!({ "type": "string", "enum": ["request", "upstream", "all"] }),
        ),
        query(
            "cursor",
            "Where the page starts: the cursor in the previous page's `next` link (keyset paging; `offset` also works but reads every record it skips).",
            json!({ "type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?Z_[0-9]{1,18}$" }),
        ),
    ];
    log_params.extend(page());
    let ok = |schema: &str, why: &str| json!({ "description": why, "content": { "application/json": { "schema": schema_ref(schema) } } });

    let mut r = errors(&[]);
    r.insert(
        "200".into(),
        ok("LogPage", "Message log records, newest first."),
    );
    paths.insert("/admin/logs".into(), json!({ "get": get_op("admin", "adminLogs", "Search the message log.", log_params, r, admin.clone()) }));

    let mut r = errors(&[("404", "Nothing recorded under this Log ID.")]);
    r.insert(
        "200".into(),
        ok(
            "LogDetail",
            "Every request and upstream call under the Log ID, and its jobs.",
        ),
    );
    paths.insert("/admin/logs/{logId}".into(), json!({ "get": get_op("admin", "adminLog", "What happened to one message.",
        vec![json!({ "name": "logId", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } })], r, admin.clone()) }));

    let mut job_params = vec![
        query(
            "state",
            "pending, kickoff-unknown, accepted, failed, completed, export-failed, expired or deleted.",
            json!({ "type": "string",
            "enum": ["pending", "kickoff-unknown", "accepted", "failed", "completed", "export-failed", "expired", "deleted"] }),
        ),
        query("source", "The source id.", text.clone()),
        query("destination", "The destination slug.", text.clone()),
        query(
            "environment",
            "Development, Staging or Production.",
            text.clone(),
        ),
        query(
            "logId",
            "The kick-off's Log ID.",
            json!({ "type": "string", "format": "uuid" }),
        ),
    ];
    job_params.extend(page());
    let mut r = errors(&[]);
    r.insert("200".into(), ok("JobPage", "Jobs, newest first."));
    paths.insert(
        "/admin/jobs".into(),
        json!({ "get": get_op("admin", "adminJobs", "List jobs.", job_params, r, admin.clone()) }),
    );

    let mut r = errors(&[("404", "No such job.")]);
    r.insert(
        "200".into(),
        ok(
            "JobDetail",
            "The job, its kick-off attempts and its calls to the EHR.",
        ),
    );
    paths.insert("/admin/jobs/{jobId}".into(), json!({ "get": get_op("admin", "adminJob", "One job.",
        vec![json!({ "name": "jobId", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } })], r, admin) }));
}

fn operations_paths(paths: &mut Map<String, Value>) {
    let status = |desc: &str| {
        json!({ "description": desc, "content": { "application/json": { "schema": {
        "type": "object", "required": ["status"], "properties": { "status": { "type": "string" }, "store": { "type": "string" } } } } } })
    };
    paths.insert(
        "/healthz".into(),
        json!({ "get": { "tags": ["operations"], "operationId": "healthz",
        "summary": "Liveness: the process answers.", "responses": { "200": status("Alive.") } } }),
    );
    let ready = |desc: &str| {
        let mut r = status(desc);
        r["content"]["application/json"]["schema"]["properties"]["discovery"] = json!({
            "type": "array",
            "description": "Capability discovery per destination with discover = true: status pending | ok | failed (with error), and what is in force (exportLevels, parameters, resourceTypes count). Never makes the gateway unready.",
            "items": { "type": "object", "required": ["destination", "environment", "status"],
                "properties": { "destination": { "type": "string" }, "environment": { "type": "string" },
                    "status": { "enum": ["pending", "ok", "failed"] }, "error": { "type": "string" },
                    "discovered": { "type": "object" } } } });
        r
    };
    paths.insert("/readyz".into(), json!({ "get": { "tags": ["operations"], "operationId": "readyz",
        "summary": "Readiness: config loaded and the job store reachable; with where capability discovery stands.",
        "responses": { "200": ready("Ready."), "503": ready("The job store does not answer.") } } }));
    paths.insert("/metrics".into(), json!({ "get": { "tags": ["operations"], "operationId": "metrics",
        "summary": "Prometheus metrics (text exposition format).",
        "responses": { "200": { "description": "Metrics.", "content": { "text/plain": { "schema": { "type": "string" } } } } } } }));
    paths.insert("/openapi.json".into(), json!({ "get": { "tags": ["operations"], "operationId": "openapi",
        "summary": "This document.",
        "responses": { "200": { "description": "OpenAPI 3.1.", "content": { "application/json": { "schema": { "type": "object" } } } } } } }));
}

/// The whole document.
pub fn document() -> Value {
    let mut schemas = Map::new();
    for (name, text) in FILE_SCHEMAS {
        let mut schema: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        relink(&mut schema);
        schemas.insert(name.to_owned(), schema);
    }
    code_schemas(&mut schemas);
    let mut paths = Map::new();
    partner_paths(&mut paths);
    admin_paths(&mut paths);
    operations_paths(&mut paths);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "fhirgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A FHIR Bulk Data gateway between partner apps and EHRs. Partners send Redox-style envelopes (or FHIR-native requests) to /fhir/R4/{destinationSlug}/{environmentFlag}/…; operators read the message log and jobs under /admin."
        },
        "tags": [
            { "name": "kick-off" }, { "name": "lifecycle" }, { "name": "capability" },
            { "name": "auth" }, { "name": "admin" }, { "name": "operations" }
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "partner": { "type": "http", "scheme": "bearer",
                    "description": "A source's API key ([[sources]] api_key_sha256) or an access token from /auth/token. Not required while no source has credentials." },
                "admin": { "type": "http", "scheme": "bearer",
                    "description": "The admin API key ([admin] api_key_sha256); partner credentials are refused." }
            }
        }
    })
}

/// `GET /openapi.json`: the OpenAPI 3.1 document of every partner and admin route.
pub async fn serve_document() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_schema_parses_and_every_ref_resolves() {
        let doc = document();
        let text = doc.to_string();
        for (name, raw) in FILE_SCHEMAS {
            assert!(serde_json::from_str::<Value>(raw).is_ok(), "{name}");
        }
        for piece in text.split("\"$ref\":\"").skip(1) {
            let target = piece.split('"').next().unwrap();
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unresolvable $ref {target}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "no component {name}"
            );
        }
    }
}
