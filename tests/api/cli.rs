//! The command line: validate envelopes offline, check a configuration.

use crate::helpers::{ADMIN_KEY, admin_toml, kicked_off, repo};
use std::process::Command;

fn fhirgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fhirgate"));
    cmd.current_dir(repo()).env_remove("FHIRGATE_CONFIG");
    cmd
}

/// `fhirgate check-config` with `flags`, on a config file that holds `toml`.
fn check_config(toml: &str, flags: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fhirgate.toml");
    std::fs::write(&config, toml).unwrap();
    fhirgate()
        .arg("check-config")
        .args(flags)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap()
}

#[test]
fn validate_prints_the_upstream_request_for_a_valid_envelope_and_exits_0() {
    let out = fhirgate()
        .args([
            "validate",
            "fixtures/envelopes/group-export/valid/seed-000-example.json",
        ])
        .output()
        .unwrap();

    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("/Group/example-group-id/$export?_outputFormat=application/fhir%2Bndjson"),
        "{stdout}"
    );
}

#[test]
fn validate_prints_the_operation_outcome_for_an_invalid_envelope_and_exits_1() {
    let out = fhirgate()
        .args([
            "validate",
            "fixtures/envelopes/group-export/invalid/type-unknown-resource.json",
        ])
        .output()
        .unwrap();

    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("\"OperationOutcome\"") && stdout.contains("\"_type\""),
        "{stdout}"
    );
}

#[test]
fn validate_against_a_named_destination_applies_its_profile() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fhirgate.toml");
    std::fs::write(
        &config,
        r#"
[[destinations]]
slug = "cerner"
name = "Oracle Health"
vendor = "oracle-health"
[destinations.environments.Production]
base_url = "https://fhir-ehr.cerner.com/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d"
auth = { type = "bearer", token_env = "FHIRGATE_TEST_TOKEN_THAT_IS_NOT_SET" }
"#,
    )
    .unwrap();

    let out = fhirgate()
        .args([
            "validate",
            "--destination",
            "cerner",
            "--environment",
            "Production",
            "--config",
        ])
        .arg(&config)
        .arg("fixtures/envelopes/group-export/valid/seed-000-example.json")
        .output()
        .unwrap();

    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "Oracle Health does not take _since: {stdout}"
    );
    assert!(stdout.contains("\"_since\""), "{stdout}");
}

#[test]
fn check_config_accepts_the_example_and_names_the_bad_key_of_a_broken_file() {
    let ok = fhirgate()
        .args(["check-config", "--config", "config/fhirgate.example.toml"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&ok.stderr);
    assert_eq!(ok.status.code(), Some(0), "{said}");
    assert!(!said.contains("warning"), "{said}");

    let bad = check_config("[server]\npublic_url = \"not a url\"\n", &[]);
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr.contains("public_url"), "{stderr}");
}

#[test]
fn check_config_passes_a_likely_mistake_but_says_which_keys_and_why() {
    let out = check_config(
        r#"
[server]
keep_alive_secs = 2.0
[[destinations]]
slug = "sandbox"
name = "Sandbox"
vendor = "sandbox"
[destinations.environments.Development]
base_url = "http://127.0.0.1:8080/sandbox/r4"
"#,
        &[],
    );
    let stderr = String::from_utf8(out.stderr).unwrap();

    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "warning: upstream.pool_idle_secs (4 s) is not below server.keep_alive_secs (2 s)"
        ),
        "{stderr}"
    );
}

#[test]
fn check_config_refuses_a_bearer_token_variable_that_is_not_set() {
    const CONFIG: &str = r#"
[[destinations]]
slug = "ehr"
name = "EHR"
vendor = "bulk-data"
[destinations.environments.Staging]
base_url = "https://ehr.example/fhir"
auth = { type = "bearer", token_env = "FHIRGATE_TEST_TOKEN_THAT_IS_NOT_SET" }
"#;

    let out = check_config(CONFIG, &[]);
    let stderr = String::from_utf8(out.stderr).unwrap();

    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("destinations[0].environments.Staging.auth.token_env"),
        "{stderr}"
    );
    let skipped = check_config(CONFIG, &["--skip-secrets"]);
    assert_eq!(skipped.status.code(), Some(0));
}

#[test]
fn an_environment_override_replaces_a_config_key() {
    let out = fhirgate()
        .args(["check-config"])
        .env("FHIRGATE__SERVER__LISTEN", "not-an-address")
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}

#[test]
fn check_config_never_prints_the_store_password() {
    let out = check_config(
        "[store]\nurl = \"postgres://fhirgate:canary-db-password@db.example:5432/fhirgate?sslmode=require\"\n",
        &[],
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert!(
        !printed.contains("canary-db-password") && printed.contains("db.example"),
        "{printed}"
    );
}

#[test]
fn migrate_creates_the_job_store_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested/jobs.db");

    let out = fhirgate()
        .arg("migrate")
        .env("FHIRGATE__STORE__URL", format!("sqlite://{}", db.display()))
        .output()
        .unwrap();

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists(), "the database file and its folder were created");
}

/// Runs the binary off the test's runtime (the gateway's message log writer lives on it).
async fn run(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || fhirgate().args(args).output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn logs_and_jobs_show_the_message_log_and_jobs_as_tables_through_the_admin_api() {
    let app = crate::helpers::TestApp::spawn_with(&admin_toml()).await;
    // The EHR names its own request id, for the operator to quote to its support.
    wiremock::Mock::given(wiremock::matchers::path_regex(r"\$export$"))
        .respond_with(
            wiremock::ResponseTemplate::new(202)
                .insert_header(
                    "Content-Location",
                    format!("{}/bulk-export/jobs/upstream-job-1", app.upstream.uri()),
                )
                .insert_header("X-Request-ID", "ehr-req-77"),
        )
        .mount(&app.upstream)
        .await;
    let location = kicked_off(&app).await;
    let job_id = location.rsplit('/').next().unwrap().to_owned();
    let admin = |cmd: &[&str]| {
        let mut args: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--url".into(),
            app.address.clone(),
            "--admin-key".into(),
            ADMIN_KEY.into(),
        ]);
        args
    };

    let out = run(admin(&["logs"])).await;
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{table}");
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("TIME") && header.contains("LOG ID") && header.contains("STATUS"),
        "{table}"
    );
    let row = table.lines().nth(1).unwrap();
    for cell in [
        crate::helpers::SEED_LOG_ID,
        "group-export",
        "spec-ehr/Development",
        "202",
        &job_id,
    ] {
        assert!(row.contains(cell), "{cell} in {row}");
    }

    let out = run(admin(&["logs", crate::helpers::SEED_LOG_ID])).await;
    let detail = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{detail}");
    assert!(
        detail.contains("Upstream calls") && detail.contains("kickoff"),
        "{detail}"
    );
    assert!(
        detail.contains("EHR REQUEST ID") && detail.contains("ehr-req-77"),
        "{detail}"
    );

    let out = run(admin(&["jobs", "--state", "accepted"])).await;
    let jobs = String::from_utf8(out.stdout).unwrap();
    assert!(
        jobs.contains(&job_id) && jobs.contains("accepted"),
        "{jobs}"
    );

    let out = run(admin(&["jobs", &job_id, "--json"])).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["id"], job_id.as_str());
    assert_eq!(json["lastUpstreamStatus"], 202);

    let out = run(vec![
        "logs".into(),
        "--url".into(),
        app.address.clone(),
        "--admin-key".into(),
        "wrong-key".into(),
    ])
    .await;
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("HTTP 401") && !err.contains("wrong-key"),
        "{err}"
    );

    let out = run(admin(&["logs", "--status", "9xx"])).await;
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("HTTP 400: status must be a status class"),
        "{err}"
    );
}

#[tokio::test]
async fn check_config_online_shows_what_each_ehr_declares_and_fails_when_one_cannot_be_read() {
    let ehr = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/fhir/metadata"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "resourceType": "CapabilityStatement",
            "rest": [{"mode": "server",
                "operation": [{"name": "export", "definition": "OperationDefinition/SystemExport"}],
                "resource": [{"type": "Patient"}, {"type": "Observation"}]}]
        })))
        .mount(&ehr)
        .await;
    wiremock::Mock::given(wiremock::matchers::path(
        "/fhir/OperationDefinition/SystemExport",
    ))
    .respond_with(
        wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "resourceType": "OperationDefinition",
            "parameter": [{"name": "_type", "use": "in"}, {"name": "_since", "use": "in"}]
        })),
    )
    .mount(&ehr)
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("online.toml");
    let destination = |slug: &str, base: &str| {
        format!(
            "[[destinations]]\nslug = \"{slug}\"\nname = \"{slug}\"\nvendor = \"bulk-data\"\n[destinations.environments.Production]\nbase_url = \"{base}\"\nallow_private_addresses = true\n"
        )
    };
    let reachable = destination("reachable", &format!("{}/fhir", ehr.uri()));
    std::fs::write(&config, &reachable).unwrap();
    let run = |config: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            fhirgate()
                .args(["check-config", "--online", "--config"])
                .arg(config)
                .output()
                .unwrap()
        })
    };

    let ok = run(config.clone()).await.unwrap();
    let stdout = String::from_utf8(ok.stdout).unwrap();
    assert_eq!(ok.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("reachable/Production: discovered: levels [\"system-export\"]; parameters _since, _type, organizeOutputBy, allowPartialManifests; 2 resource type(s); 1 export OperationDefinition(s) read"),
        "{stdout}"
    );

    let both = format!(
        "{reachable}{}",
        destination("gone", "http://127.0.0.1:9/fhir")
    );
    std::fs::write(&config, both).unwrap();
    let bad = run(config).await.unwrap();
    let stdout = String::from_utf8(bad.stdout).unwrap();
    assert_eq!(bad.status.code(), Some(1), "{stdout}");
    assert!(
        stdout
            .contains("gone/Production: discovery failed: metadata: the EHR could not be reached"),
        "{stdout}"
    );
}

#[test]
fn check_config_refuses_a_dashboard_session_lifetime_outside_a_minute_to_a_week() {
    let dir = tempfile::tempdir().unwrap();
    for (ttl, code) in [(59, 1), (60, 0), (604_800, 0), (604_801, 1)] {
        let file = dir.path().join(format!("ttl-{ttl}.toml"));
        std::fs::write(&file, format!("[admin]\nsession_ttl_secs = {ttl}\n")).unwrap();
        let out = fhirgate()
            .args(["check-config", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code),
            "session_ttl_secs = {ttl}: {stderr}"
        );
        if code == 1 {
            assert!(stderr.contains("admin.session_ttl_secs"), "{stderr}");
        }
    }
}
