//! A partner retrying an envelope gets the same job; a job the gateway accepted survives a restart.

use crate::helpers::*;
use wiremock::matchers::path_regex;
use wiremock::{Mock, ResponseTemplate};

async fn location_of(app: &TestApp) -> (u16, Option<String>) {
    let response = app.post_envelope(&spec_group_route(), &seed()).await;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("Content-Location")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, location)
}

#[tokio::test]
async fn retrying_the_same_envelope_after_a_202_returns_the_same_job_without_a_second_kickoff() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 1).await;

    let (first_status, first) = location_of(&app).await;
    let (second_status, second) = location_of(&app).await;

    assert_eq!((first_status, second_status), (202, 202));
    assert_eq!(first, second);
}

#[tokio::test]
async fn a_different_request_under_the_same_log_id_is_a_new_job() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 2).await;
    let mut other = seed();
    other["_type"] = serde_json::Value::String("Patient".into());

    let first = app.post_envelope(&spec_group_route(), &seed()).await;
    let second = app.post_envelope(&spec_group_route(), &other).await;

    assert_ne!(
        first.headers()["Content-Location"],
        second.headers()["Content-Location"]
    );
}

#[tokio::test]
async fn a_retry_after_a_failed_attempt_calls_the_upstream_again_as_a_new_attempt_of_the_same_job()
{
    let app = TestApp::spawn().await;
    Mock::given(path_regex(r"\$export$"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&app.upstream)
        .await;
    app.upstream_accepts_kickoffs().await;

    let (failed, _) = location_of(&app).await;
    let (accepted, location) = location_of(&app).await;
    let (replayed, again) = location_of(&app).await;

    assert_eq!((failed, accepted, replayed), (502, 202, 202));
    assert_eq!(location, again);
    assert_eq!(
        app.upstream_kickoffs().await.len(),
        2,
        "the replay made no upstream call"
    );
    let job_id = uuid::Uuid::parse_str(location.unwrap().rsplit('/').next().unwrap()).unwrap();
    let job = app.state().store.get(job_id).await.unwrap().unwrap();
    assert_eq!(job.attempts, 2);
    assert_eq!(job.log_id.to_string(), SEED_LOG_ID);
}

#[tokio::test]
async fn an_accepted_job_survives_a_restart_of_the_gateway() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 1).await;
    let (_, before) = location_of(&app).await;
    let job_id =
        uuid::Uuid::parse_str(before.as_deref().unwrap().rsplit('/').next().unwrap()).unwrap();

    let app = app.restart().await;
    let job = app.state().store.get(job_id).await.unwrap();
    let (status, after) = location_of(&app).await;

    assert!(job.is_some(), "the job is still in the store");
    assert_eq!(status, 202);
    assert_eq!(
        before, after,
        "the retried envelope finds the job from before the restart"
    );
}

#[tokio::test]
async fn forty_simultaneous_kickoffs_under_ten_log_ids_make_ten_jobs_and_ten_upstream_calls() {
    // The store commits concurrent writes in groups: the same Log ID several times in one group must
    // still make one job, and every copy hears about that job or that it is in flight.
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 10).await;
    let envelopes: Vec<serde_json::Value> = (0..40)
        .map(|i| {
            let mut e = seed();
            e["Meta"]["Logs"][0]["ID"] =
                serde_json::Value::String(format!("00000000-0000-4000-8000-{:012}", i % 10));
            e
        })
        .collect();

    let route = spec_group_route();
    let answers =
        futures_util::future::join_all(envelopes.iter().map(|e| app.post_envelope(&route, e)))
            .await;

    let mut jobs_by_log: std::collections::HashMap<usize, std::collections::HashSet<String>> =
        Default::default();
    for (i, answer) in answers.iter().enumerate() {
        let status = answer.status().as_u16();
        assert!(
            status == 202 || status == 409,
            "kick-off {i} answered {status}"
        );
        if let Some(location) = answer.headers().get("Content-Location") {
            jobs_by_log
                .entry(i % 10)
                .or_default()
                .insert(location.to_str().unwrap().to_owned());
        }
    }
    assert_eq!(jobs_by_log.len(), 10, "every Log ID was accepted once");
    assert!(
        jobs_by_log.values().all(|jobs| jobs.len() == 1),
        "one job per Log ID: {jobs_by_log:?}"
    );
    let stored = app
        .state()
        .store
        .list_jobs(&Default::default(), 100, 0)
        .await
        .unwrap();
    assert_eq!(stored.len(), 10);
}

#[tokio::test]
async fn the_ids_the_gateway_mints_are_time_ordered_uuidv7_and_the_partners_are_kept() {
    let app = TestApp::spawn().await;
    expect_kickoffs(&app, 3).await;
    let mut anonymous = seed();
    anonymous["Meta"].as_object_mut().unwrap().remove("Logs");

    let (_, minted) = location_of(&app).await;
    let first = app.post_envelope(&spec_group_route(), &anonymous).await;
    let second = app.post_envelope(&spec_group_route(), &anonymous).await;

    let job = |location: &str| uuid::Uuid::parse_str(location.rsplit('/').next().unwrap()).unwrap();
    let kept = app
        .state()
        .store
        .get(job(&minted.unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.log_id.to_string(),
        SEED_LOG_ID,
        "the partner's Log ID is kept"
    );
    assert_eq!(kept.id.get_version_num(), 7);
    let ids: Vec<uuid::Uuid> = [&first, &second]
        .iter()
        .map(|r| job(r.headers()["Content-Location"].to_str().unwrap()))
        .collect();
    let stored =
        futures_util::future::join_all(ids.iter().map(|id| app.state().store.get(*id))).await;
    for job in stored {
        let job = job.unwrap().unwrap();
        assert_eq!(job.id.get_version_num(), 7, "job id {}", job.id);
        assert_eq!(job.log_id.get_version_num(), 7, "Log ID {}", job.log_id);
        assert_eq!(
            job.attempt_id.get_version_num(),
            7,
            "AttemptID {}",
            job.attempt_id
        );
    }
    assert!(ids[0] < ids[1], "a later job sorts after an earlier one");
}
