//! The web dashboard under /admin/ui/: signing in with the admin key only, the session cookie, CSRF,
//! the security headers, and every page (message log, one message, jobs, one job with its actions,
//! destinations), hostile values escaped.

use crate::helpers::*;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const PARTNER_KEY: &str = "partner-key-for-the-dashboard-tests";

fn with_log_id(log_id: &str) -> Value {
    let mut envelope = seed();
    envelope["Meta"]["Logs"][0]["ID"] = json!(log_id);
    envelope
}

/// A kick-off under `log_id` that the EHR accepts; the gateway's status URL.
async fn accepted_export(app: &TestApp, log_id: &str) -> String {
    if app.upstream_kickoffs().await.is_empty() {
        app.upstream_accepts_kickoffs().await;
    }
    let response = app
        .post_envelope(&spec_group_route(), &with_log_id(log_id))
        .await;
    assert_eq!(response.status(), 202);
    response.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// A log record of the partner's request, with hostile text where text goes.
fn hostile_record(text: &str) -> fhirgate::store::LogRecord {
    fhirgate::store::LogRecord {
        source: Some(text.into()),
        destination: Some(text.into()),
        environment: Some(text.into()),
        event_type: Some(text.into()),
        route: text.into(),
        gateway_status: Some(400),
        upstream_status: None,
        error_code: Some(text.into()),
        upstream_request_id: Some(text.into()),
        ..request_record(chrono::Utc::now())
    }
}

fn job_id_of(status_url: &str) -> String {
    status_url.rsplit('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn without_a_session_every_page_redirects_to_the_sign_in_form_and_back() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let mut browser = Dashboard::new(&app);
    for (page, next) in [
        ("/admin/ui/", "%2Fadmin%2Fui%2F"),
        (
            "/admin/ui/messages?status=4xx",
            "%2Fadmin%2Fui%2Fmessages%3Fstatus%3D4xx",
        ),
        ("/admin/ui/jobs", "%2Fadmin%2Fui%2Fjobs"),
        ("/admin/ui/destinations", "%2Fadmin%2Fui%2Fdestinations"),
    ] {
        let answer = browser.get(page).await;
        assert_eq!(answer.status, 303, "{page}");
        assert_eq!(answer.location(), format!("/admin/ui/login?next={next}"));
    }
    // The admin key as a bearer header is the admin API's credential, not a dashboard session.
    let bearer = app
        .client
        .get(app.url("/admin/ui/messages"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 303);
    let form = browser.get("/admin/ui/login").await;
    assert_eq!(form.status, 200);
    assert!(
        form.body.contains("type=\"password\" name=\"key\""),
        "{}",
        form.body
    );
}

#[tokio::test]
async fn signing_in_with_the_admin_key_sets_a_strict_http_only_secure_expiring_session_cookie() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let mut browser = Dashboard::new(&app);
    let form = browser
        .get("/admin/ui/login?next=%2Fadmin%2Fui%2Fjobs")
        .await;
    let answer = browser
        .post(
            "/admin/ui/login",
            &[
                ("key", ADMIN_KEY),
                ("csrf", &form.hidden("csrf")),
                ("next", &form.hidden("next")),
            ],
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(answer.location(), "/admin/ui/jobs");
    let session = answer
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("fhirgate_session="))
        .expect("a session cookie");
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/admin/ui",
        "Max-Age=28800",
    ] {
        assert!(session.contains(attribute), "{attribute} in {session}");
    }
    assert!(!session.contains(ADMIN_KEY), "the key is not in the cookie");
    let page = browser.get("/admin/ui/jobs").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Sign out"));
}

#[tokio::test]
async fn the_cookie_is_not_secure_when_the_public_url_is_plain_http() {
    let app = TestApp::spawn_configured(&admin_toml(), |s| {
        s.server.public_url = "http://127.0.0.1:8080".parse().unwrap();
    })
    .await;
    let mut browser = Dashboard::new(&app);
    let answer = browser.sign_in(ADMIN_KEY).await;
    let cookies: Vec<_> = answer.headers.get_all("set-cookie").iter().collect();
    assert!(!cookies.is_empty());
    assert!(
        cookies
            .iter()
            .all(|c| !c.to_str().unwrap().contains("Secure")),
        "{cookies:?}"
    );
}

#[tokio::test]
async fn a_wrong_key_or_a_partners_credential_does_not_sign_in() {
    let app = TestApp::spawn_with(&admin_and_partner_toml(PARTNER_KEY)).await;
    let mut browser = Dashboard::new(&app);
    let wrong = browser.sign_in("not-the-admin-key").await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.body.contains("That is not the admin key."),
        "{}",
        wrong.body
    );
    let partner = browser.sign_in(PARTNER_KEY).await;
    assert_eq!(partner.status, 401);
    assert!(
        partner.body.contains("partner credential"),
        "{}",
        partner.body
    );
    assert!(!browser.cookies.contains_key("fhirgate_session"));
    assert_eq!(browser.get("/admin/ui/messages").await.status, 303);
}

#[tokio::test]
async fn no_one_signs_in_when_no_admin_key_is_configured() {
    let app = TestApp::spawn().await;
    let mut browser = Dashboard::new(&app);
    let form = browser.get("/admin/ui/login").await;
    assert!(
        form.body.contains("No admin key is configured"),
        "{}",
        form.body
    );
    assert_eq!(browser.sign_in("").await.status, 401);
    assert_eq!(browser.sign_in("anything").await.status, 401);
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_address() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let mut browser = Dashboard::new(&app);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(browser.sign_in("guess").await.status);
    }
    assert_eq!(&statuses[..10], &[401; 10]);
    assert_eq!(statuses[10], 429);
    let limited = browser.sign_in(ADMIN_KEY).await;
    assert_eq!(limited.status, 429, "even the right key waits");
    assert!(limited.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_forged_or_altered_session_cookie_is_sent_to_sign_in() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let signed_in = Dashboard::signed_in(&app).await;
    let real = signed_in.cookies["fhirgate_session"].clone();
    let (expires, rest) = real.split_once('.').unwrap();
    let later = expires.parse::<i64>().unwrap() + 86_400;
    for forged in [
        format!("{later}.{rest}"),
        format!("{real}x"),
        "9999999999.00000000000000000000000000000000.AAAA".to_owned(),
        String::new(),
    ] {
        let mut browser = Dashboard::new(&app);
        browser
            .cookies
            .insert("fhirgate_session".into(), forged.clone());
        assert_eq!(
            browser.get("/admin/ui/messages").await.status,
            303,
            "{forged}"
        );
    }
}

#[tokio::test]
async fn signing_out_ends_the_session_even_for_a_copied_cookie_and_on_every_replica() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let replica = app.replica().await;
    let mut browser = Dashboard::signed_in(&app).await;
    let copied = browser.cookies["fhirgate_session"].clone();
    let mut on_replica = Dashboard::new(&replica);
    on_replica
        .cookies
        .insert("fhirgate_session".into(), copied.clone());
    assert_eq!(
        on_replica.get("/admin/ui/jobs").await.status,
        200,
        "shared signing key"
    );
    let csrf = browser.csrf().await;
    let out = browser.post("/admin/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.location(), "/admin/ui/login");
    assert!(!browser.cookies.contains_key("fhirgate_session"), "cleared");
    let mut thief = Dashboard::new(&app);
    thief.cookies.insert("fhirgate_session".into(), copied);
    assert_eq!(thief.get("/admin/ui/messages").await.status, 303);
    assert_eq!(on_replica.get("/admin/ui/jobs").await.status, 303);
}

#[tokio::test]
async fn a_form_without_the_sessions_token_or_from_another_origin_is_refused() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let mut browser = Dashboard::signed_in(&app).await;
    let csrf = browser.csrf().await;
    let no_token = browser.post("/admin/ui/logout", &[]).await;
    assert_eq!(no_token.status, 403);
    let wrong_token = browser
        .post("/admin/ui/logout", &[("csrf", "forged")])
        .await;
    assert_eq!(wrong_token.status, 403);
    let elsewhere = browser
        .post_from(
            "/admin/ui/logout",
            &[("csrf", &csrf)],
            "https://evil.example",
        )
        .await;
    assert_eq!(elsewhere.status, 403);
    assert_eq!(
        browser.get("/admin/ui/jobs").await.status,
        200,
        "still signed in"
    );
    // Sign-in too: its form's token is double-submitted, and another site's post is refused.
    let mut other = Dashboard::new(&app);
    let form = other.get("/admin/ui/login").await;
    let refused = other
        .post_from(
            "/admin/ui/login",
            &[("key", ADMIN_KEY), ("csrf", &form.hidden("csrf"))],
            "https://evil.example",
        )
        .await;
    assert_eq!(refused.status, 403);
    let mut stale = Dashboard::new(&app);
    let no_cookie = stale
        .post(
            "/admin/ui/login",
            &[("key", ADMIN_KEY), ("csrf", "made-up")],
        )
        .await;
    assert_eq!(no_cookie.status, 403);
}

#[tokio::test]
async fn every_dashboard_answer_has_a_strict_content_security_policy_and_is_not_cached() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let mut browser = Dashboard::signed_in(&app).await;
    for page in [
        "/admin/ui/login",
        "/admin/ui/messages",
        "/admin/ui/jobs",
        "/admin/ui/destinations",
        "/admin/ui/no-such-page",
        "/admin/ui/assets/app.css",
    ] {
        let answer = browser.get(page).await;
        let csp = answer.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{page}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(answer.headers["x-content-type-options"], "nosniff");
        assert_eq!(answer.headers["x-frame-options"], "DENY");
        assert_eq!(answer.headers["cache-control"], "no-store");
    }
    let missing = browser.get("/admin/ui/no-such-page").await;
    assert_eq!(missing.status, 404);
    assert!(
        missing.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let css = browser.get("/admin/ui/assets/app.css").await;
    assert_eq!(css.status, 200);
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    for page in [
        "/admin/ui/messages",
        "/admin/ui/jobs",
        "/admin/ui/destinations",
    ] {
        let body = browser.get(page).await.body;
        assert!(!body.contains("<script"), "{page} needs no script");
        assert!(
            !body.contains("style="),
            "{page}: no inline styles under the CSP"
        );
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{page}: nothing from elsewhere"
        );
    }
}

#[tokio::test]
async fn the_message_log_lists_requests_newest_first_with_the_admin_apis_filters() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let first = "11111111-1111-4111-8111-111111111111";
    let second = "22222222-2222-4222-8222-222222222222";
    accepted_export(&app, first).await;
    accepted_export(&app, second).await;
    let bad = app
        .post_raw(
            &spec_group_route(),
            "application/fhir+json",
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(bad.status(), 400);
    let mut browser = Dashboard::signed_in(&app).await;
    let all = browser.get("/admin/ui/messages").await;
    assert_eq!(all.status, 200);
    assert!(all.body.contains("3 records match."), "{}", all.body);
    let (at_first, at_second) = (
        all.body.find(first).unwrap(),
        all.body.find(second).unwrap(),
    );
    assert!(at_second < at_first, "newest first");
    assert!(
        all.body.contains("class=\"status s2\">202<"),
        "202 coloured as success"
    );
    assert!(
        all.body.contains("class=\"status s4\">400<"),
        "400 coloured as a client error"
    );
    assert!(
        all.body
            .contains(&format!("href=\"/admin/ui/messages/{first}\""))
    );

    let client_errors = browser.get("/admin/ui/messages?status=4xx").await;
    assert!(
        client_errors.body.contains("1 record match."),
        "{}",
        client_errors.body
    );
    assert!(!client_errors.body.contains(first));
    let one = browser
        .get(&format!("/admin/ui/messages?logId={first}"))
        .await;
    assert!(one.body.contains("1 record match."));
    assert!(
        one.body.contains(&format!("value=\"{first}\"")),
        "the filter is kept in the form"
    );
    let upstream = browser
        .get(&format!("/admin/ui/messages?logId={first}&kind=upstream"))
        .await;
    assert!(upstream.body.contains("EHR kickoff"), "{}", upstream.body);
    let empty_fields = browser
        .get("/admin/ui/messages?logId=&source=&destination=spec-ehr&environment=&eventType=group-export&status=&since=2020-01-01T00%3A00&until=&kind=request")
        .await;
    assert!(
        empty_fields.body.contains("3 records match."),
        "{}",
        empty_fields.body
    );
    let nothing = browser
        .get("/admin/ui/messages?since=2099-01-01T00%3A00")
        .await;
    assert!(
        nothing
            .body
            .contains("Nothing recorded matches these filters.")
    );
}

#[tokio::test]
async fn the_message_log_pages_through_records() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let batch: Vec<_> = (0..7)
        .map(|i| {
            let mut r = hostile_record("spec-ehr");
            r.time = chrono::Utc::now() - chrono::Duration::seconds(i);
            r
        })
        .collect();
    app.state().store.append_log(batch).await.unwrap();
    let mut browser = Dashboard::signed_in(&app).await;
    let first = browser.get("/admin/ui/messages?limit=5").await;
    assert_eq!(first.body.matches("<tr>").count(), 1 + 5);
    assert!(first.body.contains("7 records match."));
    assert!(!first.body.contains("rel=\"first\""), "already the newest");
    let marker = "rel=\"next\" href=\"";
    let start = first.body.find(marker).expect("an older page") + marker.len();
    let older =
        first.body[start..first.body[start..].find('"').unwrap() + start].replace("&amp;", "&");
    assert!(
        older.starts_with("/admin/ui/messages?limit=5&cursor="),
        "{older}"
    );
    let second = browser.get(&older).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body.matches("<tr>").count(), 1 + 2);
    assert!(
        second.body.contains("7 records match."),
        "the count is of every page"
    );
    assert!(
        second
            .body
            .contains("rel=\"first\" href=\"/admin/ui/messages?limit=5\""),
        "{}",
        second.body
    );
    assert!(!second.body.contains("rel=\"next\""));
}

#[tokio::test]
async fn a_bad_filter_is_a_400_page_naming_it_and_the_form_stays() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let mut browser = Dashboard::signed_in(&app).await;
    let bad = browser
        .get("/admin/ui/messages?status=teapot&logId=nope&wat=1")
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("status must be a status class"),
        "{}",
        bad.body
    );
    assert!(bad.body.contains("logId must be a UUID"), "{}", bad.body);
    assert!(bad.body.contains("wat"), "{}", bad.body);
    assert!(
        bad.body.contains("value=\"teapot\""),
        "what was typed stays"
    );
    let jobs = browser.get("/admin/ui/jobs?state=sleeping").await;
    assert_eq!(jobs.status, 400);
    assert!(jobs.body.contains("state must be one of"), "{}", jobs.body);
}

#[tokio::test]
async fn hostile_values_in_the_message_log_and_the_filters_are_escaped() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let hostile = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>";
    app.state()
        .store
        .append_log(vec![hostile_record(hostile)])
        .await
        .unwrap();
    let mut browser = Dashboard::signed_in(&app).await;
    let page = browser.get("/admin/ui/messages").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(!page.body.contains("<img"), "{}", page.body);
    assert!(
        page.body.contains(
            "&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&gt;&lt;img src=x onerror=alert(2)&gt;"
        ),
        "{}",
        page.body
    );
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("source", hostile)
        .finish();
    let echoed = browser.get(&format!("/admin/ui/messages?{query}")).await;
    assert!(!echoed.body.contains("<script>alert"), "{}", echoed.body);
    assert!(
        echoed.body.contains("value=\"&lt;script&gt;"),
        "{}",
        echoed.body
    );
    let login = Dashboard::new(&app)
        .get(&format!(
            "/admin/ui/login?next=/admin/ui/{}",
            urlencode(hostile)
        ))
        .await;
    assert!(!login.body.contains("<script>alert"), "{}", login.body);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn sign_in_never_sends_the_operator_to_another_site() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    for next in [
        "https://evil.example/",
        "//evil.example/",
        "/admin/ui/\\evil",
        "/fhir/R4",
    ] {
        let mut browser = Dashboard::new(&app);
        let form = browser
            .get(&format!("/admin/ui/login?next={}", urlencode(next)))
            .await;
        let answer = browser
            .post(
                "/admin/ui/login",
                &[
                    ("key", ADMIN_KEY),
                    ("csrf", &form.hidden("csrf")),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(answer.status, 303);
        assert_eq!(answer.location(), "/admin/ui/messages", "{next}");
    }
}

#[tokio::test]
async fn a_messages_page_tells_its_story_in_order_with_its_job() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let log_id = "33333333-3333-4333-8333-333333333333";
    upstream_status(
        &app,
        ResponseTemplate::new(202).insert_header("X-Progress", "reading"),
    )
    .await;
    let status_url = accepted_export(&app, log_id).await;
    let poll = app.get(local(&app, &status_url)).await;
    assert_eq!(poll.status(), 202);
    let mut browser = Dashboard::signed_in(&app).await;
    let story = browser.get(&format!("/admin/ui/messages/{log_id}")).await;
    assert_eq!(story.status, 200, "{}", story.body);
    let body = &story.body;
    let kickoff = body
        .find("partner → gateway")
        .expect("the partner's kick-off");
    let ehr_kickoff = body.find("EHR kickoff").expect("the EHR kick-off");
    let ehr_status = body.find("EHR status").expect("the EHR status poll");
    assert!(
        kickoff < ehr_kickoff && ehr_kickoff < ehr_status,
        "oldest first"
    );
    assert!(body.contains("group-export"));
    let job_id = job_id_of(&status_url);
    assert!(
        body.contains(&format!("href=\"/admin/ui/jobs/{job_id}\"")),
        "its job"
    );
    assert!(!body.contains(UPSTREAM_STATUS), "no EHR URL");
    assert!(!body.contains(&app.upstream.uri()), "no EHR URL");

    let unknown = browser
        .get("/admin/ui/messages/44444444-4444-4444-8444-444444444444")
        .await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown
            .body
            .contains("Nothing is recorded under this Log ID")
    );
    assert_eq!(
        browser.get("/admin/ui/messages/not-a-uuid").await.status,
        404
    );
}

#[tokio::test]
async fn the_jobs_page_lists_jobs_by_state_and_links_each_one() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    upstream_status(&app, ResponseTemplate::new(202)).await;
    let status_url = accepted_export(&app, "55555555-5555-4555-8555-555555555555").await;
    let job_id = job_id_of(&status_url);
    let mut browser = Dashboard::signed_in(&app).await;
    let all = browser.get("/admin/ui/jobs").await;
    assert_eq!(all.status, 200);
    assert!(
        all.body
            .contains(&format!("href=\"/admin/ui/jobs/{job_id}\""))
    );
    assert!(
        all.body.contains("class=\"state busy\">accepted<"),
        "{}",
        all.body
    );
    let accepted = browser.get("/admin/ui/jobs?state=accepted").await;
    assert!(accepted.body.contains(&job_id));
    assert!(
        accepted
            .body
            .contains("<option value=\"accepted\" selected>"),
        "{}",
        accepted.body
    );
    let completed = browser.get("/admin/ui/jobs?state=completed").await;
    assert!(!completed.body.contains(&job_id));
    assert!(completed.body.contains("No jobs."));
}

#[tokio::test]
async fn a_completed_jobs_page_shows_its_files_by_type_with_counts_and_expiry_but_no_ehr_url() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let mut manifest = manifest(&app.upstream.uri(), None);
    manifest["output"] = json!([
        {"type": "Patient", "url": format!("{}/files/p1.ndjson", app.upstream.uri()), "count": 10},
        {"type": "Patient", "url": format!("{}/files/p2.ndjson", app.upstream.uri()), "count": 5},
        {"type": "Observation", "url": format!("{}/files/o1.ndjson", app.upstream.uri())}
    ]);
    manifest["error"] = json!([
        {"type": "OperationOutcome", "url": format!("{}/files/err.ndjson", app.upstream.uri())}
    ]);
    upstream_status(
        &app,
        ResponseTemplate::new(200)
            .set_body_json(manifest)
            .insert_header("Expires", "Mon, 30 Nov 2099 12:00:00 GMT"),
    )
    .await;
    let status_url = accepted_export(&app, "66666666-6666-4666-8666-666666666666").await;
    assert_eq!(app.get(local(&app, &status_url)).await.status(), 200);
    let mut browser = Dashboard::signed_in(&app).await;
    let page = browser
        .get(&format!("/admin/ui/jobs/{}", job_id_of(&status_url)))
        .await;
    assert_eq!(page.status, 200);
    let body = &page.body;
    assert!(body.contains("class=\"state good\">completed<"), "{body}");
    assert!(
        body.contains("3 files. Expires Mon, 30 Nov 2099 12:00:00 GMT."),
        "{body}"
    );
    assert!(
        body.contains("<td>Patient</td><td class=\"num\">2</td><td class=\"num\">15</td>"),
        "{body}"
    );
    assert!(
        body.contains("<td>Observation</td><td class=\"num\">1</td>"),
        "{body}"
    );
    assert!(body.contains("<td>OperationOutcome</td>"), "{body}");
    assert!(!body.contains(&app.upstream.uri()), "no EHR URL: {body}");
    assert!(!body.contains(".ndjson"), "no file URL");
    assert!(body.contains("Cancel export"));
    assert!(
        !body.contains("Poll now"),
        "a completed export is not polled"
    );
    let kept_until = stored_job(&app, &status_url).await.updated_at + chrono::Duration::days(30);
    assert!(
        body.contains(&format!(
            "<dt>Kept until</dt><dd><time datetime=\"{}\">",
            kept_until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )),
        "a finished job shows when it is pruned ([jobs] retention_days, 30 by default): {body}"
    );
}

#[tokio::test]
async fn poll_now_asks_the_ehr_at_once_and_cancel_deletes_the_export_upstream() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    upstream_status(
        &app,
        ResponseTemplate::new(202)
            .insert_header("Retry-After", "3600")
            .insert_header("X-Progress", "halfway"),
    )
    .await;
    Mock::given(method("DELETE"))
        .and(path(UPSTREAM_STATUS))
        .respond_with(ResponseTemplate::new(202))
        .mount(&app.upstream)
        .await;
    let status_url = accepted_export(&app, "77777777-7777-4777-8777-777777777777").await;
    let job_id = job_id_of(&status_url);
    let mut browser = Dashboard::signed_in(&app).await;
    let page = browser.get(&format!("/admin/ui/jobs/{job_id}")).await;
    assert!(page.body.contains("Poll now") && page.body.contains("Cancel export"));
    assert!(
        !page.body.contains("Kept until"),
        "a job in flight is never pruned"
    );
    let csrf = page.hidden("csrf");
    let polls = |requests: Vec<wiremock::Request>| {
        requests
            .iter()
            .filter(|r| r.method.as_str() == "GET" && r.url.path() == UPSTREAM_STATUS)
            .count()
    };
    let before = polls(app.upstream_requests().await);

    let polled = browser
        .post(&format!("/admin/ui/jobs/{job_id}/poll"), &[("csrf", &csrf)])
        .await;
    assert_eq!(polled.status, 303, "{}", polled.body);
    assert_eq!(
        polled.location(),
        format!("/admin/ui/jobs/{job_id}?done=polled")
    );
    assert_eq!(
        polls(app.upstream_requests().await),
        before + 1,
        "the EHR was asked"
    );
    let after = browser.get(polled.location()).await;
    assert!(after.body.contains("Polled the EHR"), "{}", after.body);
    assert!(after.body.contains("halfway"), "the EHR's progress");
    let story = browser
        .get("/admin/ui/messages/77777777-7777-4777-8777-777777777777")
        .await;
    assert!(
        story.body.contains("operator-poll"),
        "the operator's poll is in the message log"
    );

    let forged = browser
        .post(&format!("/admin/ui/jobs/{job_id}/cancel"), &[("csrf", "x")])
        .await;
    assert_eq!(forged.status, 403);
    let cancelled = browser
        .post(
            &format!("/admin/ui/jobs/{job_id}/cancel"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(cancelled.status, 303, "{}", cancelled.body);
    let deletes = app
        .upstream_requests()
        .await
        .iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .count();
    assert_eq!(deletes, 1, "DELETE upstream");
    let gone = browser.get(cancelled.location()).await;
    assert!(
        gone.body.contains("class=\"state quiet\">deleted<"),
        "{}",
        gone.body
    );
    assert!(!gone.body.contains("Poll now") && !gone.body.contains("Cancel export"));
    assert_eq!(
        app.get(local(&app, &status_url)).await.status(),
        404,
        "the partner sees it gone"
    );
    let again = browser
        .post(&format!("/admin/ui/jobs/{job_id}/poll"), &[("csrf", &csrf)])
        .await;
    assert_eq!(again.status, 409);
    assert!(again.body.contains("cannot be polled"), "{}", again.body);
}

#[tokio::test]
async fn the_destinations_page_shows_each_destinations_calls_failures_throttling_and_latency() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    upstream_status(
        &app,
        ResponseTemplate::new(429).insert_header("Retry-After", "1"),
    )
    .await;
    let status_url = accepted_export(&app, "88888888-8888-4888-8888-888888888888").await;
    let _ = app.get(local(&app, &status_url)).await;
    let mut browser = Dashboard::signed_in(&app).await;
    let page = browser.get("/admin/ui/destinations").await;
    assert_eq!(page.status, 200);
    let body = &page.body;
    let spec = body
        .find("spec-ehr / Development")
        .expect("the spec destination");
    let section = &body[spec..];
    let section = &section[..section.find("</section>").unwrap()];
    assert!(
        section.contains("<span class=\"big\">2</span> calls"),
        "{section}"
    );
    assert!(
        section.contains("<span class=\"big\">1</span> × 429"),
        "{section}"
    );
    assert!(section.contains("<svg"), "charts");
    assert_eq!(
        section.matches("<rect").count(),
        24 * 3,
        "one bar group per hour"
    );
    assert!(section.contains("answered 429"));
    assert!(!body.contains(&app.upstream.uri()), "no EHR URL");
}

#[tokio::test]
async fn the_sign_in_page_is_as_reviewed() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    let page = Dashboard::new(&app).get("/admin/ui/login").await;
    let csrf = page.hidden("csrf");
    insta::assert_snapshot!(page.body.replace(&csrf, "[csrf]"));
}

#[tokio::test]
async fn a_client_that_is_not_a_browser_signs_in_and_acts_with_the_sessions_token_alone() {
    let app = TestApp::spawn_with(&admin_toml()).await;
    // No Origin, no Referer, no sign-in form token: not a browser's cross-site post.
    let signed_in = app
        .client
        .post(app.url("/admin/ui/login"))
        .form(&[("key", ADMIN_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with("fhirgate_session="))
        .expect("a session");
    let mut browser = Dashboard::new(&app);
    let (name, value) = cookie.split_once('=').unwrap();
    browser.cookies.insert(name.into(), value.into());
    let csrf = browser.csrf().await;
    let without_token = app
        .client
        .post(app.url("/admin/ui/logout"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        without_token.status(),
        403,
        "the session's forms need its token"
    );
    // An Origin that is not a URL (a sandboxed page's "null") is another site.
    let null_origin = app
        .client
        .post(app.url("/admin/ui/logout"))
        .header("Cookie", &cookie)
        .header("Origin", "null")
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(null_origin.status(), 403);
    let out = app
        .client
        .post(app.url("/admin/ui/logout"))
        .header("Cookie", &cookie)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(
        browser.get("/admin/ui/jobs").await.status,
        303,
        "signed out"
    );
}
