//! An expense claim that waits for a manager's approval (a typed signal) with a deadline,
//! held by no runner while it waits. The saga is `src/expense.rs`; the web service serves
//! the same one (`POST /expenses`, then `POST /sagas/{id}/signals/approval`).
//!
//! ```text
//! cargo run --example approval                 # run 1 approved, run 2 times out
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example approval
//! cargo run --example approval -- wait          # one claim, approved from the CLI:
//! cargo run --bin saga -- --database-url sqlite://approval.db \
//!     signal <ID> approval --json '{"by":"grace","note":"ok"}'
//! ```
//!
//! Run 1: the budget is reserved, the claim waits; a second later the manager's approval
//! arrives (`Executor::signal`, typed), the runner that is told wakes the claim at once, and
//! it is paid. Run 2: nobody answers within the (shortened) three-second deadline: the
//! approval step times out, with no effect, and the budget is released. `wait` starts a
//! claim with a two-minute deadline and runs until something ends it: send the approval
//! with `saga signal` from another shell (this runner finds it within a second).

use std::time::Duration;

use saga_runtime::prelude::*;
use saga_suite::expense::{Approval, Claim, FinanceDesk, FinanceDeskSignal};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://approval.db".to_owned());
    println!(
        "store: {} (set DATABASE_URL to use another)",
        saga_runtime::store::redact(&url)
    );
    let store = saga_runtime::store::open(&url).await?;
    // Recovery every second: due deadlines, and signals sent by other processes, are found
    // within a second (signals sent here wake the claim at once).
    let orchestrator = Orchestrator::builder(store)
        .recovery_interval(Duration::from_secs(1))
        .build()?;
    let claims = orchestrator.register(FinanceDesk::default());
    let poll = Duration::from_millis(20);

    if std::env::args().nth(1).as_deref() == Some("wait") {
        let id = format!("claim-{}", &saga_runtime::new_saga_id()[..8]);
        let mut config = SagaConfig::new("expense_claim");
        config.default_timeout = Duration::from_secs(120);
        let claim = Claim {
            employee: "linus".to_owned(),
            cents: 4_250,
        };
        let outcome = claims.execute_with_id(&id, &config, claim).await?;
        println!(
            "claim {id} is {}; approve it within two minutes:",
            outcome.state()
        );
        println!(
            "  cargo run --bin saga -- --database-url {} signal {id} approval --json '{{\"by\":\"grace\",\"note\":\"ok\"}}'",
            saga_runtime::store::redact(&url)
        );
        let outcome = claims.ended(&id, poll).await?;
        report(&outcome);
        orchestrator.shutdown(Duration::from_secs(2)).await;
        return Ok(());
    }

    for (title, approver, deadline) in [
        ("run 1: approved after a second", Some("ada"), 5),
        ("run 2: nobody answers within the deadline", None, 3),
    ] {
        println!("\n== {title} ==");
        claims.saga().reset_clock();
        let mut config = SagaConfig::new("expense_claim");
        config.default_timeout = Duration::from_secs(deadline);
        let claim = Claim {
            employee: "grace".to_owned(),
            cents: 12_900,
        };
        let outcome = claims.execute(&config, claim).await?;
        let id = outcome.saga_id().to_owned();
        claims.saga().log(&format!(
            "claim {id} is {}: waiting for `approval` (deadline {deadline}s), held by no runner",
            outcome.state()
        ));
        if let Some(approver) = approver {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let approval = Approval {
                by: approver.to_owned(),
                note: "receipts attached".to_owned(),
            };
            claims
                .signal(&id, FinanceDeskSignal::Approval(approval))
                .await?;
            claims.saga().log(&format!("{approver} sends the approval"));
        }
        let outcome = claims.ended(&id, poll).await?;
        claims.saga().log(&format!("claim {id} ended"));
        report(&outcome);
    }
    orchestrator.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

fn report(outcome: &saga_runtime::Outcome<FinanceDesk>) {
    println!("outcome: {}", outcome.state());
    if let Some(payment) = &outcome.context().pay {
        println!("  payment: {}", payment.reference);
    }
    if let Some(error) = outcome.error() {
        println!("  error: {error}");
    }
}
