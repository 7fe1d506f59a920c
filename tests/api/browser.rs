//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven over WebDriver by
//! Debian's `chromedriver`. An operator signs in, searches a Log ID, opens its message, then its job,
//! and signs out. With `FHIRGATE_SCREENSHOTS=<dir>` the test saves a screenshot of each page there
//! (the README's pictures are taken this way).
//!
//! Where no chromedriver is installed the test says so and passes, unless
//! `FHIRGATE_BROWSER_TESTS=required` (CI sets it, after installing both packages).

use crate::helpers::*;
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wiremock::ResponseTemplate;

/// The gateway's public URL in this test: plain http, so the session cookie is not `Secure` (as
/// for a gateway on localhost).
const BROWSER_PUBLIC_URL: &str = "http://127.0.0.1:8080";

/// `chromedriver` on this machine, or why the test cannot run.
fn chromedriver() -> Option<PathBuf> {
    let named = std::env::var_os("FHIRGATE_CHROMEDRIVER").map(PathBuf::from);
    let found = named.or_else(|| {
        ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    });
    if found.is_none() {
        let required = std::env::var("FHIRGATE_BROWSER_TESTS").as_deref() == Ok("required");
        assert!(
            !required,
            "FHIRGATE_BROWSER_TESTS=required but no chromedriver: apt-get install chromium chromium-driver"
        );
        eprintln!(
            "skipping the browser test: no chromedriver (apt-get install chromium chromium-driver)"
        );
    }
    found
}

/// A chromedriver process, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(binary: &std::path::Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: tempfile::tempdir().unwrap(),
    };
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{}/status", driver.url)).send().await
            && r.status().is_success()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on {}", driver.url);
}

/// Headless Chromium with the flags this closed network needs (no background connections, a
/// throwaway profile).
fn chromium_capabilities(driver: &Driver) -> serde_json::Map<String, serde_json::Value> {
    let binary = std::env::var("FHIRGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let options = json!({
        "binary": binary,
        "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1360,1000", "--hide-scrollbars",
            format!("--user-data-dir={}", driver._profile.path().display()),
        ]
    });
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), options);
    caps
}

/// Types `text` into the element `css` finds.
async fn fill(browser: &fantoccini::Client, css: &str, text: &str) {
    let field = browser.find(Locator::Css(css)).await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// Clicks the element `css` finds.
async fn click(browser: &fantoccini::Client, css: &str) {
    let element = browser.find(Locator::Css(css)).await.unwrap();
    element.click().await.unwrap();
}

/// Waits (up to 10 s) until the browser is at a URL `at` accepts.
async fn until(browser: &fantoccini::Client, at: impl Fn(&url::Url) -> bool) {
    for _ in 0..100 {
        if at(&browser.current_url().await.unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the browser stayed at {}",
        browser.current_url().await.unwrap()
    );
}

/// Saves a screenshot of the current page as `{name}.png` when `FHIRGATE_SCREENSHOTS` names a folder.
async fn screenshot(browser: &fantoccini::Client, name: &str) {
    if let Some(dir) = std::env::var_os("FHIRGATE_SCREENSHOTS") {
        let png = browser.screenshot().await.expect("a screenshot");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).unwrap();
    }
}

/// Some history for the pages to show: a completed export, one still running, a refused request,
/// and an EHR that throttled a poll.
async fn some_traffic(app: &TestApp, log_id: &str) -> String {
    let mut manifest = manifest(&app.upstream.uri(), None);
    manifest["output"] = json!([
        {"type": "Patient", "url": format!("{}/files/p1.ndjson", app.upstream.uri()), "count": 120},
        {"type": "Observation", "url": format!("{}/files/o1.ndjson", app.upstream.uri()), "count": 4810},
        {"type": "Observation", "url": format!("{}/files/o2.ndjson", app.upstream.uri()), "count": 3977},
        {"type": "Condition", "url": format!("{}/files/c1.ndjson", app.upstream.uri()), "count": 388}
    ]);
    upstream_status(
        app,
        ResponseTemplate::new(200)
            .set_body_json(manifest)
            .insert_header("Expires", "Tue, 01 Dec 2026 12:00:00 GMT"),
    )
    .await;
    app.upstream_accepts_kickoffs().await;
    let mut envelope = seed();
    envelope["Meta"]["Logs"][0]["ID"] = json!(log_id);
    let response = app.post_envelope(&spec_group_route(), &envelope).await;
    assert_eq!(response.status(), 202);
    let status_url = response.headers()["Content-Location"]
        .to_str()
        .unwrap()
        .to_owned();
    let local_status = app.url(
        status_url
            .strip_prefix(BROWSER_PUBLIC_URL)
            .expect("a gateway URL"),
    );
    assert_eq!(app.get(local_status).await.status(), 200);
    for _ in 0..3 {
        let mut other = seed();
        other["Meta"]["Logs"][0]["ID"] = json!(uuid::Uuid::new_v4().to_string());
        let other = app.post_envelope(&spec_group_route(), &other).await;
        assert_eq!(other.status(), 202);
    }
    let refused = app
        .post_raw(&spec_group_route(), "application/fhir+json", b"{}".to_vec())
        .await;
    assert_eq!(refused.status(), 400);
    app.state()
        .store
        .append_log(a_day_of_ehr_calls())
        .await
        .unwrap();
    status_url.rsplit('/').next().unwrap().to_owned()
}

/// A day of EHR calls for the destinations page's charts: busier in the working hours, slower and
/// throttled for a while in the afternoon, one hour of 503s.
fn a_day_of_ehr_calls() -> Vec<fhirgate::store::LogRecord> {
    let now = chrono::Utc::now();
    let mut calls = Vec::new();
    for hours_ago in 1..24_i64 {
        let busy = (3..=12).contains(&hours_ago);
        for i in 0..(if busy { 40 } else { 12 }) {
            let status = match (hours_ago, i % 10) {
                (5 | 6, 0..=2) => 429,
                (9, 0) => 503,
                _ if i % 4 == 0 => 200,
                _ => 202,
            };
            calls.push(fhirgate::store::LogRecord {
                kind: fhirgate::store::RecordKind::Upstream,
                log_id: uuid::Uuid::new_v4(),
                attempt_id: uuid::Uuid::new_v4(),
                time: now - chrono::Duration::minutes(hours_ago * 60 - i64::from(i)),
                source: None,
                destination: Some("spec-ehr".into()),
                environment: Some("Development".into()),
                event_type: Some("background-poll".into()),
                method: None,
                route: "status".into(),
                gateway_status: None,
                upstream_status: Some(status),
                error_code: None,
                duration_ms: 40.0 + f64::from(i % 7) * 9.0 + if busy { 60.0 } else { 0.0 },
                job_id: None,
                upstream_request_id: None,
                seq: 0,
            });
        }
    }
    calls
}

#[tokio::test]
async fn an_operator_signs_in_searches_a_log_id_and_opens_its_message_and_job_in_chromium() {
    let Some(binary) = chromedriver() else {
        return;
    };
    let app = TestApp::spawn_configured(&admin_toml(), |s| {
        s.server.public_url = BROWSER_PUBLIC_URL.parse().unwrap();
    })
    .await;
    let log_id = "d9f5d293-7110-461e-a875-3beb089e79f3";
    let job_id = some_traffic(&app, log_id).await;
    let driver = start_driver(&binary).await;
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(chromium_capabilities(&driver))
        .connect(&driver.url)
        .await
        .expect("a Chromium session");

    // Without a session, the dashboard sends the browser to the sign-in form.
    browser.goto(&app.url("/admin/ui/")).await.unwrap();
    let at = browser.current_url().await.unwrap();
    assert_eq!(at.path(), "/admin/ui/login", "{at}");
    screenshot(&browser, "login").await;

    // A wrong key is refused on the form.
    fill(&browser, "#key", "not-the-key").await;
    click(&browser, "form.login button").await;
    let alert = browser
        .wait()
        .for_element(Locator::Css("p.notice.bad"))
        .await
        .unwrap();
    assert_eq!(alert.text().await.unwrap(), "That is not the admin key.");

    // The admin key signs in, and lands on the message log.
    fill(&browser, "#key", ADMIN_KEY).await;
    click(&browser, "form.login button").await;
    browser
        .wait()
        .for_element(Locator::Css("table.log"))
        .await
        .unwrap();
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/admin/ui/messages"
    );
    let rows = browser
        .find_all(Locator::Css("table.log tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 6, "five kick-offs and a status poll");
    screenshot(&browser, "messages").await;

    // Search the Log ID.
    fill(&browser, "input[name=logId]", log_id).await;
    click(&browser, "form.filters button").await;
    until(&browser, |url| url.query().unwrap_or("").contains("logId=")).await;
    let count = browser.find(Locator::Css("p.count")).await.unwrap();
    assert_eq!(count.text().await.unwrap(), "2 records match.");
    let url = browser.current_url().await.unwrap();
    assert!(
        url.query()
            .unwrap_or("")
            .contains(&format!("logId={log_id}")),
        "{url}"
    );

    // Open its message: the timeline, oldest first, and its job.
    click(
        &browser,
        &format!("table.log a[href='/admin/ui/messages/{log_id}']"),
    )
    .await;
    let heading = browser
        .wait()
        .for_element(Locator::Css("ol.timeline"))
        .await;
    assert!(heading.is_ok());
    let title = browser
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(title, format!("Message {log_id}"));
    let steps = browser
        .find_all(Locator::Css("ol.timeline li"))
        .await
        .unwrap();
    assert_eq!(steps.len(), 4, "kick-off, EHR kick-off, status, EHR status");
    assert!(steps[0].text().await.unwrap().contains("PARTNER → GATEWAY"));
    assert!(steps[1].text().await.unwrap().contains("EHR kickoff"));
    screenshot(&browser, "message").await;

    // Open the job: completed, with its files by type.
    click(
        &browser,
        &format!("table.jobs a[href='/admin/ui/jobs/{job_id}']"),
    )
    .await;
    browser
        .wait()
        .for_element(Locator::Css("table.files"))
        .await
        .unwrap();
    let state = browser.find(Locator::Css("dl.facts .state")).await.unwrap();
    assert_eq!(state.text().await.unwrap(), "completed");
    let types: Vec<String> = {
        let mut out = Vec::new();
        for cell in browser
            .find_all(Locator::Css("table.files tbody tr td:first-child"))
            .await
            .unwrap()
        {
            out.push(cell.text().await.unwrap());
        }
        out
    };
    assert_eq!(
        types,
        ["Condition", "Observation", "Patient", "OperationOutcome"],
        "output files by type, then the error files"
    );
    screenshot(&browser, "job").await;

    // The other pages, for the README.
    browser.goto(&app.url("/admin/ui/jobs")).await.unwrap();
    browser
        .wait()
        .for_element(Locator::Css("table.jobs"))
        .await
        .unwrap();
    assert_eq!(
        browser
            .find_all(Locator::Css("table.jobs tbody tr"))
            .await
            .unwrap()
            .len(),
        4
    );
    screenshot(&browser, "jobs").await;
    browser
        .goto(&app.url("/admin/ui/destinations"))
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css("svg.chart"))
        .await
        .unwrap();
    screenshot(&browser, "destinations").await;

    // Sign out: back to the form, and the pages are closed again.
    click(&browser, "form.signout button").await;
    browser
        .wait()
        .for_element(Locator::Css("form.login"))
        .await
        .unwrap();
    browser.goto(&app.url("/admin/ui/jobs")).await.unwrap();
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/admin/ui/login"
    );
    browser.close().await.unwrap();
}
