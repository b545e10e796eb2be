//! Executor semantics on the in-memory store, under tokio's paused clock: no real sleeping,
//! exact delays.

mod support;

use std::time::Duration;

use saga_runtime::prelude::*;
use saga_runtime::{EventType, MemoryStore, StoreError};
use support::{Action, Input, Script, audit_trail, scripted};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn success_walks_every_state_and_writes_the_exact_audit_trail() {
    let script = Script::new();
    let (orchestrator, saga, _) = scripted(MemoryStore::new(), &script);
    let config = SagaConfig::new("scripted")
        .user_id("u1")
        .ip_address("10.0.0.1");
    let outcome = saga
        .execute_with_id("s-ok", &config, Input { id: 1 })
        .await
        .unwrap();

    assert_eq!(outcome.state(), SagaState::Completed);
    assert_eq!(
        outcome.typed_state(),
        Some(support::ScriptedState::Completed)
    );
    assert!(outcome.error().is_none());
    assert_eq!(outcome.context().a, Some(1));
    assert_eq!(outcome.context().c, Some(1));
    assert_eq!(script.names(), ["a", "b", "c"]);
    assert_eq!(
        audit_trail(&orchestrator, "s-ok").await,
        [
            "saga_started",
            "step_started:a:1",
            "step_completed:a:1",
            "step_started:b:1",
            "step_completed:b:1",
            "step_started:c:1",
            "step_completed:c:1",
            "saga_completed",
        ]
    );
    let rows = orchestrator
        .audit_log(&AuditQuery::new().saga_id("s-ok"))
        .await
        .unwrap();
    assert!(rows.iter().all(|r| r.user_id.as_deref() == Some("u1")
        && r.ip_address.as_deref() == Some("10.0.0.1")
        && r.saga_type == "scripted"));
    let record = orchestrator.load("s-ok").await.unwrap().unwrap();
    assert_eq!(record.state, SagaState::Completed);
    assert_eq!(record.version, 4, "created, then one write per step");
}

#[tokio::test(start_paused = true)]
async fn retries_follow_the_exponential_backoff_exactly() {
    let script = Script::new();
    script.on("a", [Action::Fail, Action::Fail]);
    let (orchestrator, saga, _) = scripted(MemoryStore::new(), &script);
    let outcome = saga
        .execute_with_id("s-retry", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();

    assert!(outcome.is_completed());
    let attempts: Vec<(u32, Duration)> = script
        .log()
        .iter()
        .filter(|a| a.name == "a")
        .map(|a| (a.attempt, a.at))
        .collect();
    // 100 ms after the first failure, 200 ms after the second: jitter is 0 for this step.
    assert_eq!(attempts, [(1, ms(0)), (2, ms(100)), (3, ms(300))]);
    let trail = audit_trail(&orchestrator, "s-retry").await;
    assert_eq!(
        trail[..8],
        [
            "saga_started",
            "step_started:a:1",
            "step_failed:a:1",
            "step_retrying:a:2",
            "step_started:a:2",
            "step_failed:a:2",
            "step_retrying:a:3",
            "step_started:a:3",
        ]
    );
    let retrying = orchestrator
        .audit_log(
            &AuditQuery::new()
                .saga_id("s-retry")
                .event_type("step_retrying"),
        )
        .await
        .unwrap();
    let delays: Vec<_> = retrying
        .iter()
        .map(|r| r.details.clone().unwrap())
        .collect();
    assert_eq!(delays, [r#"{"delay_ms":100}"#, r#"{"delay_ms":200}"#]);
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_compensate_completed_steps_newest_first() {
    let script = Script::new();
    script.on("c", [Action::Fail, Action::Fail, Action::Fail]);
    let (orchestrator, saga, _) = scripted(MemoryStore::new(), &script);
    let outcome = saga
        .execute_with_id("s-comp", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();

    assert_eq!(outcome.state(), SagaState::Failed);
    let error = outcome.error().unwrap();
    assert_eq!(error.step(), Some("c"));
    assert_eq!(error.message(), "c failed");
    // retries = 2: three attempts, then undo b, then undo a. c's compensation does not run:
    // c failed with a definite error, so it never took effect.
    assert_eq!(
        script.names(),
        ["a", "b", "c", "c", "c", "undo_b", "undo_a"]
    );
    assert_eq!(outcome.context().c, None);
    let trail = audit_trail(&orchestrator, "s-comp").await;
    assert_eq!(
        trail[trail.len() - 6..],
        [
            "step_failed:c:3",
            "compensation_started:b:1",
            "compensation_executed:b:1",
            "compensation_started:a:1",
            "compensation_executed:a:1",
            "saga_failed",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_not_retried() {
    let script = Script::new();
    script.on("b", [Action::Permanent]);
    let (_, saga, _) = scripted(MemoryStore::new(), &script);
    let outcome = saga
        .execute(&SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(script.names(), ["a", "b", "undo_a"]);
    assert_eq!(outcome.error().unwrap().message(), "b refused");
}

#[tokio::test(start_paused = true)]
async fn retry_after_overrides_the_backoff_delay() {
    let script = Script::new();
    script.on("a", [Action::RetryAfter(Duration::from_secs(7))]);
    let (_, saga, _) = scripted(MemoryStore::new(), &script);
    let outcome = saga
        .execute(&SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert!(outcome.is_completed());
    let log = script.log();
    assert_eq!(
        (log[1].name, log[1].attempt, log[1].at),
        ("a", 2, Duration::from_secs(7))
    );
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_step_is_compensated_when_its_compensation_does_not_need_its_output() {
    let script = Script::new();
    // b's three attempts all time out (1 s each): its outcome is unknown.
    script.on("b", [Action::Hang(Duration::from_secs(5)); 3]);
    let (orchestrator, saga, _) = scripted(MemoryStore::new(), &script);
    let outcome = saga
        .execute_with_id("s-timeout", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();

    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(script.names(), ["a", "b", "b", "b", "undo_b", "undo_a"]);
    let at: Vec<Duration> = script.log().iter().map(|a| a.at).collect();
    // Attempts start at 0 (a), 0, 1.1 s, 2.3 s (timeouts of 1 s, delays 100 and 200 ms).
    assert_eq!(at[1..4], [ms(0), ms(1100), ms(2300)]);
    let trail = audit_trail(&orchestrator, "s-timeout").await;
    assert!(
        trail.contains(&"step_timed_out:b:3".to_owned()),
        "{trail:?}"
    );
    assert!(
        outcome
            .error()
            .unwrap()
            .message()
            .contains("timed out after 1s")
    );
}

#[tokio::test(start_paused = true)]
async fn an_unknown_outcome_whose_compensation_needs_the_output_is_skipped_and_recorded() {
    let script = Script::new();
    script.on("c", [Action::Hang(Duration::from_secs(5)); 3]);
    let (orchestrator, saga, _) = scripted(MemoryStore::new(), &script);
    let outcome = saga
        .execute_with_id("s-skip", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();

    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(
        script.names(),
        ["a", "b", "c", "c", "c", "undo_b", "undo_a"]
    );
    let skipped = orchestrator
        .audit_log(
            &AuditQuery::new()
                .saga_id("s-skip")
                .event_type("compensation_skipped"),
        )
        .await
        .unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].step_name.as_deref(), Some("c"));
    assert!(
        skipped[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("needs its output")
    );
}

#[tokio::test(start_paused = true)]
async fn a_compensation_that_gives_up_ends_in_compensation_failed() {
    let script = Script::new();
    script.on("c", [Action::Permanent]);
    // undo_b has compensate_retries = 1: two attempts, both fail.
    script.on("undo_b", [Action::Fail, Action::Fail]);
    let (orchestrator, saga, _) = scripted(MemoryStore::new(), &script);
    let outcome = saga
        .execute_with_id("s-cf", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();

    assert_eq!(outcome.state(), SagaState::CompensationFailed);
    assert_eq!(
        outcome.typed_state(),
        Some(support::ScriptedState::CompensationFailed)
    );
    // undo_a never runs: compensation stops where it failed, for a person to look at.
    assert_eq!(script.names(), ["a", "b", "c", "undo_b", "undo_b"]);
    let error = outcome.error().unwrap();
    assert_eq!(error.step(), Some("b"));
    assert!(
        error.message().contains("gave up after 2 attempt(s)"),
        "{error}"
    );
    let trail = audit_trail(&orchestrator, "s-cf").await;
    assert_eq!(
        trail[trail.len() - 5..],
        [
            "compensation_started:b:1",
            "compensation_failed:b:1",
            "compensation_started:b:2",
            "compensation_failed:b:2",
            "saga_compensation_failed:b",
        ]
    );
    let record = orchestrator.load("s-cf").await.unwrap().unwrap();
    assert_eq!(record.state, SagaState::CompensationFailed);
    assert_eq!(record.current_step.as_deref(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_step_is_a_permanent_failure() {
    let script = Script::new();
    script.on("b", [Action::Panic]);
    let (_, saga, _) = scripted(MemoryStore::new(), &script);
    let outcome = saga
        .execute(&SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(script.names(), ["a", "b", "undo_a"]);
    assert!(outcome.error().unwrap().message().contains("panicked"));
}

#[tokio::test(start_paused = true)]
async fn after_the_pivot_failures_retry_forward_until_success() {
    let script = Script::new();
    // c allows one retry, but past the pivot it keeps retrying (delays capped at 40 ms).
    script.on("c", [Action::Fail; 6]);
    let (_, _, pivoted) = scripted(MemoryStore::new(), &script);
    let outcome = pivoted
        .execute(&SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert!(outcome.is_completed());
    assert_eq!(
        script.names(),
        ["a", "b", "c", "c", "c", "c", "c", "c", "c"]
    );
    let c_times: Vec<Duration> = script
        .log()
        .iter()
        .filter(|a| a.name == "c")
        .map(|a| a.at)
        .collect();
    let gaps: Vec<Duration> = c_times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [ms(10), ms(20), ms(40), ms(40), ms(40), ms(40)]);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_after_the_pivot_parks_the_saga() {
    let script = Script::new();
    script.on("c", [Action::Permanent]);
    let (orchestrator, _, pivoted) = scripted(MemoryStore::new(), &script);
    let outcome = pivoted
        .execute_with_id("p-park", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Parked);
    assert_eq!(
        script.names(),
        ["a", "b", "c"],
        "nothing is compensated past the pivot"
    );
    let record = orchestrator.load("p-park").await.unwrap().unwrap();
    assert_eq!(record.parked_from, Some(SagaState::Running));
    let trail = audit_trail(&orchestrator, "p-park").await;
    assert_eq!(trail.last().map(String::as_str), Some("saga_parked:c"));
    let failure = outcome.error().unwrap();
    assert_eq!(failure.step(), Some("c"));
    assert_eq!(
        failure.to_string(),
        "step `c`: failed for good after the pivot; the saga cannot compensate: c refused",
        "the step is named once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_before_the_pivot_compensates_normally() {
    let script = Script::new();
    script.on("b", [Action::Permanent]);
    let (_, _, pivoted) = scripted(MemoryStore::new(), &script);
    let outcome = pivoted
        .execute(&SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(script.names(), ["a", "b", "undo_a"]);
}

#[tokio::test(start_paused = true)]
async fn a_pivot_whose_outcome_is_unknown_is_parked() {
    let script = Script::new();
    script.on("b", [Action::Hang(Duration::from_secs(5)); 2]);
    let (_, _, pivoted) = scripted(MemoryStore::new(), &script);
    let outcome = pivoted
        .execute(&SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Parked);
    assert_eq!(outcome.error().unwrap().step(), Some("b"));
    assert_eq!(
        script.names(),
        ["a", "b", "b"],
        "a is not compensated: b may have happened"
    );
    assert!(
        outcome
            .error()
            .unwrap()
            .message()
            .contains("the pivot's outcome is unknown")
    );
}

#[tokio::test(start_paused = true)]
async fn cancellation_stops_at_the_next_boundary_and_compensates() {
    let script = Script::new();
    script.on("b", [Action::Cancel]);
    let (orchestrator, saga, _) = scripted(MemoryStore::new(), &script);
    let outcome = saga
        .execute_with_id("s-cancel", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();

    assert_eq!(outcome.state(), SagaState::Failed);
    // b finished its attempt (cancellation is a request), c never started, b and a undone.
    assert_eq!(script.names(), ["a", "b", "undo_b", "undo_a"]);
    assert_eq!(
        outcome.error().unwrap().message(),
        "cancelled: customer changed their mind"
    );
    assert_eq!(outcome.error().unwrap().step(), None);
    let trail = audit_trail(&orchestrator, "s-cancel").await;
    assert_eq!(
        trail[3..],
        [
            "step_started:b:1",
            "cancel_requested",
            "step_completed:b:1",
            "saga_cancelled",
            "compensation_started:b:1",
            "compensation_executed:b:1",
            "compensation_started:a:1",
            "compensation_executed:a:1",
            "saga_failed",
        ]
    );
    assert!(!trail.iter().any(|e| e.starts_with("step_started:c")));
    let record = orchestrator.load("s-cancel").await.unwrap().unwrap();
    assert_eq!(record.cancel_requested, None, "the request was acted on");
}

#[tokio::test(start_paused = true)]
async fn cancellation_after_the_pivot_is_recorded_and_ignored() {
    let script = Script::new();
    script.on("b", [Action::Cancel]);
    let (orchestrator, _, pivoted) = scripted(MemoryStore::new(), &script);
    let outcome = pivoted
        .execute_with_id("p-cancel", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    assert!(outcome.is_completed());
    assert_eq!(script.names(), ["a", "b", "c"]);
    let trail = audit_trail(&orchestrator, "p-cancel").await;
    assert!(trail.contains(&"cancel_ignored".to_owned()), "{trail:?}");
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_finished_saga_is_refused() {
    let script = Script::new();
    let (orchestrator, saga, _) = scripted(MemoryStore::new(), &script);
    saga.execute_with_id("s-done", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    let err = orchestrator
        .cancel("s-done", "too late", &Actor::new("ops"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SagaError::Store(StoreError::InvalidState {
                state: SagaState::Completed,
                ..
            })
        ),
        "{err}"
    );
    let err = orchestrator
        .cancel("nope", "x", &Actor::new("ops"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SagaError::Store(StoreError::NotFound { .. })),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn starting_an_existing_id_returns_the_existing_saga() {
    let script = Script::new();
    let (_, saga, _) = scripted(MemoryStore::new(), &script);
    let first = saga
        .execute_with_id("order-42", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    let second = saga
        .execute_with_id("order-42", &SagaConfig::default(), Input { id: 99 })
        .await
        .unwrap();
    assert!(!first.is_existing());
    assert!(second.is_existing());
    assert_eq!(second.state(), SagaState::Completed);
    assert_eq!(
        second.context().input,
        Input { id: 1 },
        "the original input, not the new one"
    );
    assert_eq!(script.names(), ["a", "b", "c"], "ran once");
}

#[tokio::test(start_paused = true)]
async fn concurrent_starts_of_one_id_run_it_once() {
    let script = Script::new();
    script.on("a", [Action::Hang(ms(300))]);
    let (_, saga, _) = scripted(MemoryStore::new(), &script);
    let config = SagaConfig::default();
    let (one, two) = tokio::join!(
        saga.execute_with_id("dup", &config, Input { id: 1 }),
        saga.execute_with_id("dup", &config, Input { id: 1 }),
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    assert!(one.is_completed() && two.is_completed());
    assert!(one.is_existing() != two.is_existing());
    assert_eq!(script.names(), ["a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn an_id_of_another_definition_is_a_conflict() {
    let script = Script::new();
    let (_, saga, pivoted) = scripted(MemoryStore::new(), &script);
    saga.execute_with_id("shared", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap();
    let err = pivoted
        .execute_with_id("shared", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap_err();
    assert!(matches!(err, SagaError::IdConflict { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn config_defaults_apply_to_steps_that_set_nothing() {
    // `pivoted.a` sets retries = 1; the scripted steps set timeouts. A saga whose steps set
    // nothing takes the config's defaults: see `Bare`.
    #[derive(Default)]
    struct Bare(std::sync::Arc<Script>);
    #[saga(name = "bare", input = Input)]
    impl Bare {
        #[step]
        async fn only(&self, ctx: &StepContext) -> Result<u32, StepError> {
            self.0.act("only", ctx).await
        }
    }
    let script = Script::new();
    script.on("only", [Action::Hang(Duration::from_secs(10)); 10]);
    let orchestrator = Orchestrator::builder(MemoryStore::new())
        .jitter_seed(1)
        .build()
        .unwrap();
    let bare = orchestrator.register(Bare(script.clone()));
    let config = SagaConfig::default()
        .default_timeout(Duration::from_secs(2))
        .default_max_retries(4);
    let outcome = bare.execute(&config, Input { id: 1 }).await.unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert_eq!(script.names().len(), 5, "1 attempt + 4 retries");
    assert!(
        outcome
            .error()
            .unwrap()
            .message()
            .contains("timed out after 2s")
    );
}

#[tokio::test(start_paused = true)]
async fn audit_off_writes_no_rows_but_still_checkpoints() {
    let script = Script::new();
    script.on("c", [Action::Permanent]);
    let (orchestrator, saga, _) = scripted(MemoryStore::new(), &script);
    let config = SagaConfig::default().enable_audit_log(false);
    let outcome = saga
        .execute_with_id("quiet", &config, Input { id: 1 })
        .await
        .unwrap();
    assert_eq!(outcome.state(), SagaState::Failed);
    assert!(audit_trail(&orchestrator, "quiet").await.is_empty());
    let record = orchestrator.load("quiet").await.unwrap().unwrap();
    assert_eq!(record.state, SagaState::Failed);
    assert!(record.version > 5);
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_jittered_delays() {
    async fn delays(seed: u64) -> Vec<u64> {
        struct Jittery(std::sync::Arc<Script>);
        #[saga(name = "jittery", input = Input)]
        impl Jittery {
            #[step(retries = 5, backoff_initial = "1s", jitter = 0.5)]
            async fn only(&self, ctx: &StepContext) -> Result<u32, StepError> {
                self.0.act("only", ctx).await
            }
        }
        let script = Script::new();
        script.on("only", [Action::Fail; 5]);
        let orchestrator = Orchestrator::builder(MemoryStore::new())
            .jitter_seed(seed)
            .build()
            .unwrap();
        let saga = orchestrator.register(Jittery(script.clone()));
        let outcome = saga
            .execute_with_id("j", &SagaConfig::default(), Input { id: 1 })
            .await
            .unwrap();
        assert!(outcome.is_completed());
        orchestrator
            .audit_log(&AuditQuery::new().saga_id("j").event_type("step_retrying"))
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let details: serde_json::Value =
                    serde_json::from_str(r.details.as_deref().unwrap()).unwrap();
                details["delay_ms"].as_u64().unwrap()
            })
            .collect()
    }
    let a = delays(42).await;
    assert_eq!(a, delays(42).await);
    assert_ne!(a, delays(43).await);
    for (n, d) in a.iter().enumerate() {
        let full = 1000 * 2u64.pow(n as u32);
        assert!(*d <= full && *d >= full / 2, "delay {d} for retry {n}");
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_settings_are_errors_not_panics() {
    let err = Orchestrator::builder(MemoryStore::new())
        .lease(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        err.to_string() == "invalid lease: must be greater than zero",
        "{err}"
    );
    let err = Orchestrator::builder(MemoryStore::new())
        .max_context_bytes(0)
        .build()
        .unwrap_err();
    assert!(matches!(
        err,
        SagaError::Config {
            setting: "max context bytes",
            ..
        }
    ));
    let script = Script::new();
    let (_, saga, _) = scripted(MemoryStore::new(), &script);
    let err = saga
        .execute(
            &SagaConfig::default().default_timeout(Duration::ZERO),
            Input { id: 1 },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string() == "invalid `default_timeout`: must be greater than zero",
        "{err}"
    );
    assert!(script.names().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_context_above_the_limit_is_refused_before_anything_is_written() {
    let script = Script::new();
    let store = MemoryStore::new();
    let orchestrator = Orchestrator::builder(store.clone())
        .max_context_bytes(8)
        .build()
        .unwrap();
    let saga = orchestrator.register(support::Scripted(script.clone()));
    let err = saga
        .execute_with_id("big", &SagaConfig::default(), Input { id: 1 })
        .await
        .unwrap_err();
    assert!(
        matches!(err, SagaError::ContextTooLarge { limit: 8, .. }),
        "{err}"
    );
    assert!(store.load("big").await.unwrap().is_none());
    assert!(script.names().is_empty());
}

#[tokio::test]
async fn events_carry_the_event_type_enum_names() {
    for event in EventType::ALL {
        assert_eq!(event.as_str().parse::<EventType>(), Ok(event));
    }
}

#[tokio::test(start_paused = true)]
async fn execute_within_bounds_the_wait_past_a_pivot() {
    let script = Script::new();
    // After the pivot `c` fails 30 times: 10 ms, then 20 ms, then 40 ms apart (its
    // `backoff_max`), about 1.1 s in all, longer than the caller waits.
    script.on("c", [Action::Fail; 30]);
    let (orchestrator, _, pivoted) = scripted(MemoryStore::new(), &script);
    let config = SagaConfig::default();
    let waited = pivoted
        .execute_within("slow", &config, Input { id: 1 }, Duration::from_millis(500))
        .await
        .unwrap();
    let saga_id = match waited {
        saga_runtime::Waited::Running { saga_id } => saga_id,
        other => panic!("ended too soon: {other:?}"),
    };
    assert_eq!(saga_id, "slow");
    // It goes on without the caller, and ends.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let outcome = pivoted.outcome("slow").await.unwrap().unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(script.names().iter().filter(|n| **n == "c").count(), 31);
    assert!(!script.names().contains(&"undo_a"));
    let record = orchestrator.load("slow").await.unwrap().unwrap();
    assert_eq!(record.state, SagaState::Completed);

    // A saga that ends within the wait is returned as it ended.
    let waited = pivoted
        .execute_within("quick", &config, Input { id: 2 }, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(matches!(waited, saga_runtime::Waited::Ended(ref o) if o.is_completed()));
}
