//! Nothing lost between the EHR and the partner: manifest pages, partial manifests, organized output and
//! every manifest field, with no EHR URL ever reaching the partner.

use crate::helpers::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

/// The upstream's host and port: no answer the partner gets may hold it.
fn ehr_origin(app: &TestApp) -> String {
    app.upstream.uri().trim_start_matches("http://").to_owned()
}

/// A response's headers and body as text, to look for the EHR's origin in.
async fn whole_answer(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let mut text = format!("{:?}\n", response.headers());
    text.push_str(&response.text().await.unwrap());
    (status, text)
}

fn page_of_files(upstream: &str, page: usize, next: Option<String>) -> Value {
    let mut m = json!({
        "transactionTime": "2025-07-22T23:59:59.000Z",
        "request": format!("{upstream}/fhir/r4/Group/example-group-id/$export?_type=Patient"),
        "requiresAccessToken": true,
        "output": [
            {"type": "Patient", "url": format!("{upstream}/files/p{page}-patient.ndjson"), "count": 1},
            {"type": "Observation", "url": format!("{upstream}/files/p{page}-observation.ndjson"), "count": 1}
        ],
        "error": []
    });
    if let Some(next) = next {
        m["link"] = json!([{"relation": "next", "url": next}]);
    }
    m
}

/// Mounts page `page` (1-based, as the EHR counts) at the status URL with `?page=`.
async fn upstream_page(app: &TestApp, page: usize, status: u16, body: Value) {
    Mock::given(method("GET"))
        .and(path(UPSTREAM_STATUS))
        .and(query_param("page", page.to_string()))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .with_priority(1)
        .mount(&app.upstream)
        .await;
}

/// Every file named in `pages` is served once by the upstream, its body naming the file.
async fn upstream_serves_files_once(app: &TestApp, pages: &[Value]) {
    for page in pages {
        for item in page["output"].as_array().unwrap() {
            let url = item["url"].as_str().unwrap();
            let file_path = url.strip_prefix(&app.upstream.uri()).unwrap().to_owned();
            Mock::given(method("GET"))
                .and(path(file_path.clone()))
                .respond_with(ResponseTemplate::new(200).set_body_string(format!(
                    "{{\"resourceType\":\"Basic\",\"id\":\"{file_path}\"}}\n"
                )))
                .expect(1)
                .mount(&app.upstream)
                .await;
        }
    }
}

fn redacted(page: &Value, job: &str) -> Value {
    serde_json::from_str(&page.to_string().replace(job, "[job-id]")).unwrap()
}

#[tokio::test]
async fn a_manifest_in_three_pages_reaches_a_client_that_follows_next_and_every_file_downloads_once()
 {
    let app = TestApp::spawn().await;
    let up = app.upstream.uri();
    let next = |p: usize| Some(format!("{up}{UPSTREAM_STATUS}?page={p}"));
    let pages = [
        page_of_files(&up, 1, next(2)),
        page_of_files(&up, 2, next(3)),
        page_of_files(&up, 3, None),
    ];
    upstream_page(&app, 2, 200, pages[1].clone()).await;
    upstream_page(&app, 3, 200, pages[2].clone()).await;
    upstream_status(&app, ResponseTemplate::new(200).set_body_json(&pages[0])).await;
    upstream_serves_files_once(&app, &pages).await;
    let location = kicked_off(&app).await;
    let job = location.rsplit('/').next().unwrap().to_owned();

    // The client: status, then every `next` link, downloading every file it is given.
    let mut url = Some(location.clone());
    let mut seen_pages = Vec::new();
    let mut files = BTreeSet::new();
    let mut downloaded = Vec::new();
    while let Some(page_url) = url.take() {
        let (status, text) = whole_answer(app.get(local(&app, &page_url)).await).await;
        assert_eq!(status, 200, "{text}");
        assert!(!text.contains(&ehr_origin(&app)), "{text}");
        let body: Value = serde_json::from_str(text.split_once('\n').unwrap().1).unwrap();
        for item in body["output"].as_array().unwrap() {
            let file = item["url"].as_str().unwrap().to_owned();
            assert!(
                files.insert(file.clone()),
                "file ids are unique across pages"
            );
            let response = app.get(local(&app, &file)).await;
            assert_eq!(response.status(), 200);
            downloaded.push(response.text().await.unwrap());
        }
        url = body["link"][0]["url"].as_str().map(str::to_owned);
        seen_pages.push(redacted(&body, &job));
    }

    assert_eq!(seen_pages.len(), 3);
    assert_eq!(files.len(), 6);
    for page in 1..=3 {
        for kind in ["patient", "observation"] {
            let name = format!("/files/p{page}-{kind}.ndjson");
            assert!(
                downloaded.iter().any(|d| d.contains(&name)),
                "{name} arrived"
            );
        }
    }
    insta::assert_json_snapshot!("manifest_pages", seen_pages);
}

#[tokio::test]
async fn a_deleted_jobs_manifest_pages_answer_404() {
    let app = TestApp::spawn().await;
    let up = app.upstream.uri();
    upstream_page(&app, 2, 200, page_of_files(&up, 2, None)).await;
    upstream_status(
        &app,
        ResponseTemplate::new(200).set_body_json(page_of_files(
            &up,
            1,
            Some(format!("{up}{UPSTREAM_STATUS}?page=2")),
        )),
    )
    .await;
    Mock::given(method("DELETE"))
        .and(path(UPSTREAM_STATUS))
        .respond_with(ResponseTemplate::new(202))
        .mount(&app.upstream)
        .await;
    let location = kicked_off(&app).await;
    let first: Value = json_body(app.get(local(&app, &location)).await).await;
    let second = first["link"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(app.get(local(&app, &second)).await.status(), 200);

    let deleted = app
        .client
        .delete(local(&app, &location))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);

    let (status, text) = whole_answer(app.get(local(&app, &second)).await).await;
    assert_eq!(status, 404);
    assert!(!text.contains(&ehr_origin(&app)), "{text}");
}

#[tokio::test]
async fn a_manifest_page_that_does_not_exist_is_a_404() {
    let app = TestApp::spawn().await;
    upstream_completes(&app).await;
    let location = kicked_off(&app).await;
    assert_eq!(app.get(local(&app, &location)).await.status(), 200);
    let page = location.replace("/export-status/", "/export-manifest/");
    for beyond in ["/1", "/99", "/x"] {
        let response = app.get(local(&app, &format!("{page}{beyond}"))).await;
        assert_eq!(response.status(), 404, "{beyond}");
    }
}

#[tokio::test]
async fn a_partial_manifest_in_a_202_reaches_the_partner_as_a_202_and_its_files_download() {
    let app = TestApp::spawn().await;
    let up = app.upstream.uri();
    let partial = page_of_files(&up, 1, None);
    upstream_status(
        &app,
        ResponseTemplate::new(202)
            .insert_header("Retry-After", "30")
            .insert_header("X-Progress", "40% complete")
            .set_body_json(&partial),
    )
    .await;
    upstream_serves_files_once(&app, std::slice::from_ref(&partial)).await;
    let location = kicked_off(&app).await;
    let job = location.rsplit('/').next().unwrap().to_owned();

    let first = app.get(local(&app, &location)).await;
    assert_eq!(first.status(), 202);
    assert_eq!(first.headers()["X-Progress"], "40% complete");
    let (_, text) = whole_answer(first).await;
    assert!(!text.contains(&ehr_origin(&app)), "{text}");
    let body: Value = serde_json::from_str(text.split_once('\n').unwrap().1).unwrap();
    // The next poll is answered from the store, with the same partial manifest.
    let again: Value = json_body(app.get(local(&app, &location)).await).await;
    assert_eq!(again, body);
    for item in body["output"].as_array().unwrap() {
        let response = app.get(local(&app, item["url"].as_str().unwrap())).await;
        assert_eq!(response.status(), 200);
    }
    insta::assert_json_snapshot!("partial_manifest", redacted(&body, &job));
}

#[tokio::test]
async fn organized_output_without_types_reaches_the_partner_and_its_files_stream_unchanged() {
    let app = TestApp::spawn().await;
    let up = app.upstream.uri();
    let organized = json!({
        "transactionTime": "2025-07-22T23:59:59.000Z",
        "request": format!("{up}/fhir/r4/Group/example-group-id/$export?organizeOutputBy=Patient"),
        "requiresAccessToken": true,
        "outputFormat": "application/fhir+ndjson",
        "outputOrganizedBy": "Patient",
        "outputOrganizedByDetail": "each file holds one patient's resources",
        "output": [
            {"url": format!("{up}/files/p1-patient.ndjson")},
            {"url": format!("{up}/files/p1-observation.ndjson"), "count": 2}
        ],
        "error": [{"url": format!("{up}/files/errors.ndjson")}]
    });
    let body = "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n{\"resourceType\":\"Observation\",\"id\":\"b\"}\n";
    app.upstream_get(
        "/files/p1-patient.ndjson",
        ResponseTemplate::new(200).set_body_string(body),
    )
    .await;
    let location = completed(&app, organized).await;
    let job = location.rsplit('/').next().unwrap().to_owned();

    let (status, text) = whole_answer(app.get(local(&app, &location)).await).await;
    assert_eq!(status, 200);
    assert!(!text.contains(&ehr_origin(&app)), "{text}");
    let manifest: Value = serde_json::from_str(text.split_once('\n').unwrap().1).unwrap();
    assert_eq!(manifest["outputOrganizedBy"], "Patient");
    let file = app
        .get(local(&app, manifest["output"][0]["url"].as_str().unwrap()))
        .await;
    assert_eq!(file.status(), 200);
    assert_eq!(file.text().await.unwrap(), body);
    insta::assert_json_snapshot!("organized_manifest", redacted(&manifest, &job));
}

#[tokio::test]
async fn the_ehr_origin_hidden_in_extensions_unknown_keys_and_request_never_reaches_the_partner() {
    let app = TestApp::spawn().await;
    let up = app.upstream.uri();
    let status_url = format!("{up}{UPSTREAM_STATUS}");
    let mut m = manifest(&up, None);
    m["request"] = json!(format!(
        "{up}/fhir/r4/Group/g/$export?_type=Patient&_secret=internal"
    ));
    m["manifestType"] =
        json!("http://hl7.org/fhir/uv/bulkdata/StructureDefinition/BulkDataManifest");
    m["extension"] = json!([
        {"url": format!("{up}/fhir/StructureDefinition/internal-job"), "valueString": "job-7"},
        {"url": "http://example.org/fhir/StructureDefinition/status", "valueUrl": status_url},
        {"url": "http://example.org/fhir/StructureDefinition/region", "valueString": "east"}
    ]);
    m["output"][0]["extension"] = json!({
        format!("{up}/fhir/StructureDefinition/shard"): 3,
        "http://example.org/fhir/StructureDefinition/checksum": "sha256:abc"
    });
    m["vendorDetails"] = json!({
        "statusUrl": status_url,
        "console": format!("see {up}/console for details"),
        "retention": "7d"
    });
    let location = completed(&app, m).await;
    let job = location.rsplit('/').next().unwrap().to_owned();

    let (status, text) = whole_answer(app.get(local(&app, &location)).await).await;
    assert_eq!(status, 200);
    assert!(!text.contains(&ehr_origin(&app)), "{text}");
    let manifest: Value = serde_json::from_str(text.split_once('\n').unwrap().1).unwrap();
    assert_eq!(manifest["vendorDetails"]["retention"], "7d");
    assert_eq!(manifest["extension"].as_array().unwrap().len(), 2);
    assert_eq!(
        manifest["vendorDetails"]["statusUrl"],
        location.as_str(),
        "the EHR's status URL becomes the gateway's"
    );
    assert!(
        manifest["request"]
            .as_str()
            .unwrap()
            .starts_with(PUBLIC_URL)
    );

    // An error answer (the EHR has let the file go) names no EHR either.
    let (status, text) = whole_answer(
        app.get(local(&app, manifest["output"][0]["url"].as_str().unwrap()))
            .await,
    )
    .await;
    assert_eq!(status, 404);
    assert!(!text.contains(&ehr_origin(&app)), "{text}");
    insta::assert_json_snapshot!("scrubbed_manifest", redacted(&manifest, &job));
}

/// NDJSON whose attachments are on the EHR (absolute and relative), and one elsewhere.
fn documents(up: &str) -> String {
    [
        json!({"resourceType": "DocumentReference", "id": "d1", "status": "current", "content": [
            {"attachment": {"contentType": "application/pdf", "url": format!("{up}/fhir/r4/Binary/doc-1")}},
            {"attachment": {"contentType": "text/plain", "url": "Binary/doc-2"}}
        ]}),
        json!({"resourceType": "DiagnosticReport", "id": "r1", "status": "final", "code": {"text": "CBC"},
            "presentedForm": [{"contentType": "application/pdf", "url": format!("{up}/fhir/r4/Binary/report-1")}]}),
        json!({"resourceType": "Media", "id": "m1", "status": "completed",
            "content": {"contentType": "image/png", "url": "https://images.example.org/m1.png"}}),
        // On a file host, pre-signed: sealed whole, fetched without the EHR's token.
        json!({"resourceType": "DocumentReference", "id": "d2", "status": "current", "content": [
            {"attachment": {"contentType": "application/pdf",
                "url": format!("{}/presigned/scan.pdf?X-Amz-Signature=secret", up.replace("127.0.0.1", "localhost"))}}
        ]}),
    ]
    .iter()
    .map(|line| format!("{line}\n"))
    .collect()
}

#[tokio::test]
async fn attachments_that_need_the_ehrs_token_download_through_the_gateway_exactly_once() {
    let app = TestApp::spawn().await;
    let up = app.upstream.uri();
    app.upstream_get(
        "/files/documents.ndjson",
        ResponseTemplate::new(200).set_body_string(documents(&up)),
    )
    .await;
    for (binary, body) in [
        ("doc-1", "%PDF one"),
        ("doc-2", "plain two"),
        ("report-1", "%PDF report"),
    ] {
        Mock::given(method("GET"))
            .and(path(format!("/fhir/r4/Binary/{binary}")))
            .and(wiremock::matchers::header(
                "Authorization",
                format!("Bearer {UPSTREAM_TOKEN}").as_str(),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/pdf"))
            .expect(1)
            .mount(&app.upstream)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/presigned/scan.pdf"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("%PDF scan", "application/pdf"))
        .expect(1)
        .mount(&app.upstream)
        .await;
    let mut m = manifest(&up, None);
    m["output"] = json!([{"type": "DocumentReference", "url": format!("{up}/files/documents.ndjson"), "count": 4}]);
    let location = completed(&app, m).await;
    let job = location.rsplit('/').next().unwrap().to_owned();
    let manifest: Value = json_body(app.get(local(&app, &location)).await).await;

    let file = app
        .get(local(&app, manifest["output"][0]["url"].as_str().unwrap()))
        .await;
    assert_eq!(file.status(), 200);
    assert!(
        file.headers().get("content-length").is_none() || file.headers()["content-length"] != "0"
    );
    let (_, text) = whole_answer(file).await;
    assert!(!text.contains(&ehr_origin(&app)), "{text}");
    let ndjson = text.split_once('\n').unwrap().1;
    let lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let links = [
        lines[0]["content"][0]["attachment"]["url"]
            .as_str()
            .unwrap(),
        lines[0]["content"][1]["attachment"]["url"]
            .as_str()
            .unwrap(),
        lines[1]["presentedForm"][0]["url"].as_str().unwrap(),
        lines[3]["content"][0]["attachment"]["url"]
            .as_str()
            .unwrap(),
    ];
    assert!(
        !ndjson.contains("localhost") && !ndjson.contains("secret"),
        "{ndjson}"
    );
    assert_eq!(
        lines[2]["content"]["url"], "https://images.example.org/m1.png",
        "a URL elsewhere is left alone"
    );
    let mut bodies = Vec::new();
    for link in links {
        assert!(link.starts_with(&format!(
            "{PUBLIC_URL}/fhir/R4/spec-ehr/Development/export-attachment/{job}/"
        )));
        let response = app.get(local(&app, link)).await;
        assert_eq!(response.status(), 200, "{link}");
        assert_eq!(response.headers()["content-type"], "application/pdf");
        bodies.push(response.text().await.unwrap());
    }
    assert_eq!(
        bodies,
        ["%PDF one", "plain two", "%PDF report", "%PDF scan"]
    );
    let presigned: Vec<_> = app
        .upstream_requests()
        .await
        .into_iter()
        .filter(|r| r.url.path() == "/presigned/scan.pdf")
        .collect();
    assert_eq!(presigned[0].url.query(), Some("X-Amz-Signature=secret"));
    assert!(
        !presigned[0].headers.contains_key("authorization"),
        "the EHR's token goes only to its origin"
    );

    // A link changed by one character opens nothing, and says nothing of the EHR.
    let forged = format!("{}x", links[0]);
    let (status, text) = whole_answer(app.get(local(&app, &forged)).await).await;
    assert_eq!(status, 404);
    assert!(!text.contains(&ehr_origin(&app)), "{text}");

    let shown: Vec<Value> = lines
        .iter()
        .map(|l| {
            let mut text = l.to_string().replace(&job, "[job-id]");
            for link in links {
                // The key is made per store: the link's tag (or sealed URL) differs per run.
                let after_job = link.split_once(&format!("{job}/")).unwrap().1;
                let tag = after_job.split('/').next().unwrap();
                text = text.replace(tag, "[tag]");
            }
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    insta::assert_json_snapshot!("rewritten_attachments", shown);
}

#[tokio::test]
async fn an_attachment_download_passes_the_partners_range_on_and_is_refused_to_another_destination()
{
    let app = TestApp::spawn().await;
    let up = app.upstream.uri();
    app.upstream_get(
        "/files/documents.ndjson",
        ResponseTemplate::new(200).set_body_string(documents(&up)),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/fhir/r4/Binary/report-1"))
        .and(wiremock::matchers::header("Range", "bytes=0-3"))
        .respond_with(
            ResponseTemplate::new(206)
                .insert_header("Content-Range", "bytes 0-3/11")
                .set_body_string("%PDF"),
        )
        .mount(&app.upstream)
        .await;
    let mut m = manifest(&up, None);
    m["output"] =
        json!([{"type": "DocumentReference", "url": format!("{up}/files/documents.ndjson")}]);
    let location = completed(&app, m).await;
    let manifest: Value = json_body(app.get(local(&app, &location)).await).await;
    let ndjson = app
        .get(local(&app, manifest["output"][0]["url"].as_str().unwrap()))
        .await
        .text()
        .await
        .unwrap();
    let report: Value = serde_json::from_str(ndjson.lines().nth(1).unwrap()).unwrap();
    let link = report["presentedForm"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();

    let partial = app
        .client
        .get(local(&app, &link))
        .header("Range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), 206);
    assert_eq!(partial.headers()["content-range"], "bytes 0-3/11");
    assert_eq!(partial.text().await.unwrap(), "%PDF");

    let elsewhere = link.replace("/spec-ehr/Development/", "/strict-ehr/Development/");
    assert_eq!(app.get(local(&app, &elsewhere)).await.status(), 404);
}

#[tokio::test]
async fn an_ehr_error_that_names_its_own_urls_reaches_the_partner_without_them() {
    let app = TestApp::spawn().await;
    let up = app.upstream.uri();
    upstream_status(
        &app,
        ResponseTemplate::new(400).set_body_json(json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing",
                "diagnostics": format!("Export job {up}{UPSTREAM_STATUS} failed: see {up}/logs/7."),
                "expression": [format!("{up}/fhir/r4/Group/g")]}]
        })),
    )
    .await;
    let location = kicked_off(&app).await;

    let (status, text) = whole_answer(app.get(local(&app, &location)).await).await;
    assert_eq!(status, 400);
    assert!(!text.contains(&ehr_origin(&app)), "{text}");
    assert!(text.contains("failed: see [EHR URL]"), "{text}");
}
