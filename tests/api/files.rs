//! Files come through the gateway: streamed, redirects followed by the gateway itself, Authorization
//! only where it belongs.

use crate::helpers::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn file_url(app: &TestApp, status_url: &str, n: usize) -> String {
    local(app, status_url).replace("export-status", "export-file") + &format!("/{n}")
}

#[tokio::test]
async fn a_file_is_streamed_with_the_upstream_credential_on_the_upstreams_own_origin() {
    let app = TestApp::spawn().await;
    let body = "{\"resourceType\":\"Patient\",\"id\":\"1\"}\n".repeat(1000);
    Mock::given(method("GET"))
        .and(path("/files/patient.ndjson"))
        .and(header(
            "Authorization",
            format!("Bearer {UPSTREAM_TOKEN}").as_str(),
        ))
        .and(header("Accept", "application/fhir+ndjson"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body.clone()))
        .expect(1)
        .mount(&app.upstream)
        .await;
    let location = completed(&app, manifest(&app.upstream.uri(), None)).await;

    let response = app.get(file_url(&app, &location, 0)).await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["Content-Type"],
        "application/fhir+ndjson"
    );
    assert_eq!(response.text().await.unwrap(), body);
}

#[tokio::test]
async fn a_307_to_the_file_host_is_followed_without_authorization() {
    let app = TestApp::spawn().await;
    let file_host = MockServer::start().await;
    let host_url = format!("http://localhost:{}", file_host.address().port());
    Mock::given(method("GET"))
        .and(path("/files/patient.ndjson"))
        .respond_with(ResponseTemplate::new(307).insert_header(
            "Location",
            format!("{host_url}/presigned/patient.ndjson?X-Amz-Signature=s3cr3t"),
        ))
        .mount(&app.upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/presigned/patient.ndjson"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string("{\"resourceType\":\"Patient\"}\n"),
        )
        .expect(1)
        .mount(&file_host)
        .await;
    let location = completed(&app, manifest(&app.upstream.uri(), None)).await;

    let response = app.get(file_url(&app, &location, 0)).await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "{\"resourceType\":\"Patient\"}\n"
    );
    let seen: Vec<Request> = file_host.received_requests().await.unwrap();
    assert!(
        seen.iter()
            .all(|r| !r.headers.contains_key("authorization")),
        "the file host never sees Authorization"
    );
    let origin_saw: Vec<Request> = app
        .upstream_requests()
        .await
        .into_iter()
        .filter(|r| r.url.path() == "/files/patient.ndjson")
        .collect();
    assert!(origin_saw[0].headers.contains_key("authorization"));
}

#[tokio::test]
async fn no_authorization_is_sent_when_the_manifest_does_not_require_a_token() {
    let app = TestApp::spawn().await;
    app.upstream_get(
        "/files/patient.ndjson",
        ResponseTemplate::new(200).set_body_string("x\n"),
    )
    .await;
    let mut m = manifest(&app.upstream.uri(), None);
    m["requiresAccessToken"] = json!(false);
    let location = completed(&app, m).await;

    let response = app.get(file_url(&app, &location, 0)).await;

    assert_eq!(response.status(), 200);
    let seen: Vec<Request> = app
        .upstream_requests()
        .await
        .into_iter()
        .filter(|r| r.url.path() == "/files/patient.ndjson")
        .collect();
    assert!(!seen[0].headers.contains_key("authorization"));
}

#[tokio::test]
async fn a_redirect_to_a_host_that_is_not_allowed_is_refused_with_502() {
    let app = TestApp::spawn().await;
    Mock::given(method("GET"))
        .and(path("/files/patient.ndjson"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("Location", "http://attacker.example/steal"),
        )
        .mount(&app.upstream)
        .await;
    let location = completed(&app, manifest(&app.upstream.uri(), None)).await;

    let response = app.get(file_url(&app, &location, 0)).await;

    assert_eq!(response.status(), 502);
    let outcome = json_body(response).await;
    assert_eq!(codes(&outcome), ["security"]);
    insta::assert_json_snapshot!("file_redirect_refused", outcome);
}

#[tokio::test]
async fn more_than_three_redirects_are_refused() {
    let app = TestApp::spawn().await;
    for n in 0..5 {
        Mock::given(method("GET"))
            .and(path(format!("/files/hop{n}")))
            .respond_with(
                ResponseTemplate::new(301)
                    .insert_header("Location", format!("/files/hop{}", n + 1)),
            )
            .mount(&app.upstream)
            .await;
    }
    let mut m = manifest(&app.upstream.uri(), None);
    m["output"][0]["url"] = json!(format!("{}/files/hop0", app.upstream.uri()));
    let location = completed(&app, m).await;

    let response = app.get(file_url(&app, &location, 0)).await;

    assert_eq!(response.status(), 502);
    assert_eq!(
        app.upstream_requests()
            .await
            .iter()
            .filter(|r| r.url.path().starts_with("/files/hop"))
            .count(),
        4
    );
}

#[tokio::test]
async fn an_ehr_on_a_private_address_is_refused_before_any_connection_unless_the_destination_allows_it()
 {
    let app = TestApp::spawn().await;
    upstream_completes(&app).await;
    app.upstream_accepts_kickoffs().await;

    // strict-ehr is the same loopback EHR as spec-ehr, without allow_private_addresses.
    let refused = app
        .post_envelope(
            &group_route("strict-ehr", "Development", "example-group-id"),
            &seed(),
        )
        .await;
    let allowed = app.post_envelope(&spec_group_route(), &seed()).await;

    assert_eq!(refused.status(), 502);
    let body = refused.text().await.unwrap();
    assert!(body.contains("not public"), "{body}");
    assert!(!body.contains("127.0.0.1"), "{body}");
    assert_eq!(allowed.status(), 202);
    assert_eq!(
        app.upstream_kickoffs().await.len(),
        1,
        "only the allowed destination's EHR was called"
    );
}

#[tokio::test]
async fn an_ehr_at_a_nat64_mapped_link_local_address_is_refused_before_any_connection() {
    // 64:ff9b::a9fe:a9fe is 169.254.169.254 (cloud metadata) through NAT64.
    let app = TestApp::spawn_with(
        r#"
[[destinations]]
slug = "public-ehr"
name = "An EHR on a public name"
vendor = "bulk-data"
[destinations.environments.Production]
base_url = "http://[64:ff9b::a9fe:a9fe]/fhir"
discover = false
"#,
    )
    .await;
    let kick = app
        .post_envelope(
            &group_route("public-ehr", "Production", "example-group-id"),
            &seed(),
        )
        .await;
    assert_eq!(kick.status(), 502, "the EHR's own address is not public");
    let body = kick.text().await.unwrap();
    assert!(body.contains("not public"), "{body}");
}

#[tokio::test]
async fn range_and_accept_encoding_are_passed_through_so_a_partner_can_resume() {
    let app = TestApp::spawn().await;
    Mock::given(method("GET"))
        .and(path("/files/patient.ndjson"))
        .and(header("Range", "bytes=10-19"))
        .and(header("Accept-Encoding", "gzip"))
        .respond_with(
            ResponseTemplate::new(206)
                .insert_header("Content-Range", "bytes 10-19/100")
                .set_body_string("0123456789"),
        )
        .expect(1)
        .mount(&app.upstream)
        .await;
    let location = completed(&app, manifest(&app.upstream.uri(), None)).await;

    let response = app
        .client
        .get(file_url(&app, &location, 0))
        .header("Range", "bytes=10-19")
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 206);
    assert_eq!(response.headers()["Content-Range"], "bytes 10-19/100");
    assert_eq!(response.text().await.unwrap(), "0123456789");
}

#[tokio::test]
async fn an_upstream_404_for_a_file_is_a_404_and_the_job_is_expired() {
    let app = TestApp::spawn().await;
    app.upstream_get("/files/patient.ndjson", ResponseTemplate::new(404))
        .await;
    let location = completed(&app, manifest(&app.upstream.uri(), None)).await;

    let response = app.get(file_url(&app, &location, 0)).await;
    let status = app.get(local(&app, &location)).await;

    assert_eq!(response.status(), 404);
    assert_eq!(status.status(), 404);
}

#[tokio::test]
async fn an_unknown_file_number_is_404() {
    let app = TestApp::spawn().await;
    let location = completed(&app, manifest(&app.upstream.uri(), None)).await;

    for n in ["4", "99", "-1", "x"] {
        let url = local(&app, &location).replace("export-status", "export-file") + "/" + n;
        assert_eq!(app.get(url).await.status(), 404, "{n}");
    }
}

/// A server that promises 100 000 bytes and closes after 10.
async fn truncating_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+ndjson\r\nContent-Length: 100000\r\n\r\n0123456789")
                .await;
            let _ = socket.shutdown().await;
        }
    });
    format!("http://localhost:{}", addr.port())
}

#[tokio::test]
async fn an_upstream_that_fails_mid_stream_aborts_the_download_instead_of_passing_off_a_short_file()
{
    let app = TestApp::spawn().await;
    let broken = truncating_server().await;
    let mut m = manifest(&app.upstream.uri(), None);
    m["output"][0]["url"] = json!(format!("{broken}/file.ndjson"));
    let location = completed(&app, m).await;

    let response = app.get(file_url(&app, &location, 0)).await;
    let body = response.bytes().await;

    assert!(
        body.is_err(),
        "the partner sees the download fail, not 10 bytes of 100 000"
    );
}
