//! A web service that runs a backtest saga per request and serves `/metrics`: the Rust
//! counterpart of the deployment guide's FastAPI example. The handlers are in `src/web.rs`.
//!
//! ```text
//! cargo run --example web_service                    # 127.0.0.1:8000, SQLite ./web_service.db
//! cargo run --example web_service -- 127.0.0.1:9000  # another address
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example web_service
//!
//! curl -s -X POST localhost:8000/backtests -H 'content-type: application/json' \
//!      -H 'x-user-id: user_123' -d '{"strategy_id": 123}'
//! curl -s localhost:8000/sagas/<saga_id>
//! curl -s localhost:8000/metrics | grep saga
//! ```
//!
//! Ctrl-C stops accepting requests, lets running sagas finish (up to 10 s), and exits.

use std::time::Duration;

use saga_suite::backtest::BacktestWorkflow;
use saga_suite::web;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".to_owned());
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://web_service.db".to_owned());
    let store = saga_runtime::store::open(&url).await?;
    // Every fifth call to the strategy runner times out once, so retries show in the metrics.
    let app = web::app(
        store,
        BacktestWorkflow::new(5, false),
        Duration::from_secs(15),
    )?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "listening on http://{} (store {})",
        listener.local_addr()?,
        saga_runtime::store::redact(&url)
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        println!("shutting down");
    };
    web::serve(listener, app.clone(), shutdown).await?;
    app.orchestrator.shutdown(Duration::from_secs(10)).await;
    println!("stopped");
    Ok(())
}
