//! The operator console in a real browser (Debian's `chromium` and `chromedriver`, driven
//! over `WebDriver` with fantoccini), on SQLite and on PostgreSQL: the list and its filters
//! and pages, one saga's timeline against its audit log, actions refused without the token
//! and done with it, and hostile text rendered as text.
//!
//! Skips when `chromedriver` is not installed, except under CI (`SAGA_TEST_BROWSER=1`),
//! where it must run. With `SAGA_CONSOLE_SCREENSHOTS=DIR`, it saves a PNG of each page.

mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use saga_runtime::prelude::*;
use saga_runtime::{SagaState, SagaStore};
use support::stores::{Backend, Harness};

const TOKEN: &str = "t0ken-for-tests";

/// An error message built to break a page that does not escape: a script, an image whose
/// error handler runs script, quotes, NUL, and 10 KB.
fn hostile() -> String {
    format!(
        "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\"> \"double\" 'single' nul\0 {}",
        "x".repeat(10_000)
    )
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// `pay` fails once, then succeeds.
    pub flaky: bool,
    /// `ship` fails for good with this message.
    pub fail: Option<String>,
}

pub struct Shop;

#[saga(name = "shop", input = Order)]
impl Shop {
    #[step(compensate = "release", backoff_initial = "5ms")]
    async fn reserve(&self) -> Result<u32, StepError> {
        Ok(7)
    }

    async fn release(&self) -> Result<(), StepError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(())
    }

    #[step(retries = 2, backoff_initial = "5ms")]
    async fn pay(&self, input: &Order, ctx: &StepContext) -> Result<String, StepError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if input.flaky && ctx.attempt() == 1 {
            return Err(StepError::retryable("the bank timed out"));
        }
        Ok("PAY-1".into())
    }

    #[step(retries = 0)]
    async fn ship(&self, input: &Order) -> Result<(), StepError> {
        match &input.fail {
            Some(message) => Err(StepError::permanent(message.clone())),
            None => Ok(()),
        }
    }
}

/// A saga that waits for a signal, to act on.
pub struct Gate;

#[saga(name = "gate", input = Order)]
impl Gate {
    #[step(timeout = "1h")]
    async fn open(&self, #[signal] go: bool) -> Result<bool, StepError> {
        Ok(go)
    }
}

async fn fill(store: Arc<dyn SagaStore>) -> Orchestrator {
    let orchestrator = Orchestrator::builder(store)
        .recovery(false)
        .build()
        .expect("orchestrator");
    let shops = orchestrator.register(Shop);
    let gates = orchestrator.register(Gate);
    let config = SagaConfig::default().user_id("ada");
    let order = |flaky, fail: Option<String>| Order { flaky, fail };
    for i in 0..60 {
        let outcome = shops
            .execute_with_id(format!("bulk-{i:02}"), &config, order(false, None))
            .await
            .expect("bulk");
        assert!(outcome.is_completed());
    }
    shops
        .execute_with_id("ok-1", &config, order(true, None))
        .await
        .expect("ok-1");
    let bad = shops
        .execute_with_id("bad-1", &config, order(false, Some("out of stock".into())))
        .await
        .expect("bad-1");
    assert_eq!(bad.state(), SagaState::Failed);
    shops
        .execute_with_id("xss-<b>1</b>", &config, order(false, Some(hostile())))
        .await
        .expect("xss");
    for id in ["gate-1", "gate-2"] {
        let gate = gates
            .execute_with_id(id, &config, order(false, None))
            .await
            .expect("gate");
        assert_eq!(gate.state(), SagaState::Waiting);
    }
    orchestrator
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Driver(tokio::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// `chromedriver` and a headless Chromium session, or `None` (skip) without them.
async fn browser() -> Option<(Client, Driver)> {
    let binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(binary) = binary else {
        assert!(
            std::env::var_os("SAGA_TEST_BROWSER").is_none(),
            "SAGA_TEST_BROWSER is set but chromedriver is not installed"
        );
        eprintln!("note: chromedriver is not installed; skipping the browser tests");
        return None;
    };
    let port = free_port();
    let child = tokio::process::Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser session");
    Some((client, driver))
}

/// Serves the console over `store`, with the token; its base URL.
async fn serve(store: Arc<dyn SagaStore>) -> String {
    let app = saga_console::Console::new(store)
        .token(Some(TOKEN.into()))
        // No reload while the test reads a page (a reload makes its elements stale).
        .refresh(Duration::ZERO)
        .router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

async fn shot(client: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("SAGA_CONSOLE_SCREENSHOTS") {
        let png = client.screenshot().await.expect("screenshot");
        let path = std::path::Path::new(&dir).join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
    }
}

async fn texts(client: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for element in client.find_all(Locator::Css(css)).await.expect("find") {
        out.push(element.text().await.expect("text"));
    }
    out
}

async fn attrs(client: &Client, css: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for element in client.find_all(Locator::Css(css)).await.expect("find") {
        out.push(element.attr(name).await.expect("attr").unwrap_or_default());
    }
    out
}

async fn count(client: &Client, css: &str) -> usize {
    client
        .find_all(Locator::Css(css))
        .await
        .expect("find")
        .len()
}

async fn drive(backend: Backend) {
    let Some(harness) = Harness::open(backend).await else {
        return;
    };
    let Some((client, _driver)) = browser().await else {
        return;
    };
    let orchestrator = fill(harness.reopen()).await;
    let base = serve(harness.reopen()).await;

    // The list: counts on top, newest first, 50 a page.
    client.goto(&format!("{base}/sagas")).await.expect("list");
    let completed = texts(&client, "a[data-state=completed] b").await;
    assert_eq!(completed, ["61"], "60 bulk sagas and ok-1");
    assert_eq!(count(&client, "#sagas tbody tr").await, 50);
    if backend == Backend::Sqlite {
        shot(&client, "console-sagas").await;
    }

    // Filtered by id prefix, across two pages, with no row twice.
    client
        .find(Locator::Css("input[name=id]"))
        .await
        .expect("id filter")
        .send_keys("bulk-")
        .await
        .expect("type");
    client
        .find(Locator::Css("form.filters button"))
        .await
        .expect("filter button")
        .click()
        .await
        .expect("filter");
    client
        .wait()
        .for_element(Locator::Css("#sagas tbody tr:first-child[data-id=bulk-59]"))
        .await
        .expect("the filtered list");
    let mut ids = attrs(&client, "#sagas tbody tr", "data-id").await;
    assert_eq!(ids.len(), 50);
    assert!(ids.iter().all(|id| id.starts_with("bulk-")), "{ids:?}");
    assert_eq!(
        ids.first().map(String::as_str),
        Some("bulk-59"),
        "newest first"
    );
    client
        .find(Locator::Id("next"))
        .await
        .expect("a next page")
        .click()
        .await
        .expect("next page");
    client
        .wait()
        .for_element(Locator::Css("#sagas tbody tr:first-child[data-id=bulk-09]"))
        .await
        .expect("the next page");
    let second = attrs(&client, "#sagas tbody tr", "data-id").await;
    assert_eq!(second.len(), 10, "{second:?}");
    assert_eq!(
        client
            .find(Locator::Css("input[name=id]"))
            .await
            .expect("kept")
            .prop("value")
            .await
            .expect("value")
            .as_deref(),
        Some("bulk-"),
        "the filter is kept on the next page"
    );
    ids.extend(second);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 60, "every bulk saga once");

    // By state.
    client
        .goto(&format!("{base}/sagas?state=failed"))
        .await
        .expect("failed");
    let failed = attrs(&client, "#sagas tbody tr", "data-id").await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.contains(&"bad-1".to_owned()));

    // One saga: every attempt and compensation in the audit log is a bar.
    for id in ["ok-1", "bad-1"] {
        client
            .goto(&format!("{base}/sagas/{id}"))
            .await
            .expect("saga page");
        let started = count(&client, "#audit tr[data-event=step_started]").await;
        let attempts = count(&client, "svg rect.bar.attempt").await;
        assert_eq!(attempts, started, "{id}: one bar per step attempt");
        let failed = count(&client, "#audit tr[data-event=step_failed]").await;
        assert_eq!(
            count(&client, "svg rect.bar.attempt.failed").await,
            failed,
            "{id}"
        );
        let compensations = count(&client, "#audit tr[data-event=compensation_started]").await;
        assert_eq!(
            count(&client, "svg rect.bar.compensation").await,
            compensations,
            "{id}"
        );
        let steps = attrs(&client, "svg rect.bar.attempt", "data-step").await;
        let logged = texts(
            &client,
            "#audit tr[data-event=step_started] td:nth-child(4)",
        )
        .await;
        let (mut steps, mut logged) = (steps, logged);
        steps.sort();
        logged.sort();
        assert_eq!(steps, logged, "{id}: the bars are the logged attempts");
    }
    client
        .goto(&format!("{base}/sagas/ok-1"))
        .await
        .expect("ok-1");
    assert_eq!(
        count(&client, "svg rect.bar.attempt.failed").await,
        1,
        "pay's first attempt"
    );
    client
        .goto(&format!("{base}/sagas/bad-1"))
        .await
        .expect("bad-1");
    assert_eq!(
        count(&client, "svg rect.bar.compensation").await,
        1,
        "reserve undone"
    );
    if backend == Backend::Sqlite {
        shot(&client, "console-saga").await;
    }

    // Hostile text renders as text: no script ran, no element was injected.
    let hostile_url = format!("{base}/sagas/xss-%3Cb%3E1%3C%2Fb%3E");
    client.goto(&hostile_url).await.expect("hostile saga");
    let title = client.title().await.expect("title");
    assert!(!title.contains("pwned"), "{title}");
    assert_eq!(texts(&client, "#saga-id").await, ["xss-<b>1</b>"]);
    assert_eq!(count(&client, "#header img").await, 0);
    assert_eq!(count(&client, "#saga-id b").await, 0);
    let error = texts(&client, "dd[data-field=error]").await.concat();
    assert!(
        error.contains("<script>document.title='pwned'</script>"),
        "{}",
        &error[..200]
    );
    assert!(error.contains("\"double\" 'single'"));
    // Stored cut at 8 KiB with a note (RELIABILITY.md, guarantee 13), and shown whole.
    assert!(
        error.len() > 8_000,
        "the whole stored message is shown: {}",
        error.len()
    );

    // Actions: refused without the token, done with it, recorded with who did it.
    client
        .goto(&format!("{base}/sagas/gate-1"))
        .await
        .expect("gate");
    assert_eq!(
        count(&client, ".actions form").await,
        0,
        "read-only before signing in"
    );
    assert_eq!(count(&client, "#read-only").await, 1);
    let status = client
        .execute_async(
            "const done = arguments[0]; \
             fetch('/sagas/gate-1/actions', {method: 'POST', \
               headers: {'content-type': 'application/x-www-form-urlencoded'}, \
               body: 'action=cancel&reason=nope&csrf=0123456789abcdef0123456789abcdef'}) \
             .then(r => done(r.status));",
            vec![],
        )
        .await
        .expect("an action without the token");
    assert_eq!(status.as_u64(), Some(403));
    assert_eq!(
        harness
            .store
            .load("gate-1")
            .await
            .unwrap()
            .unwrap()
            .cancel_requested,
        None,
        "nothing was done"
    );
    client.goto(&format!("{base}/login")).await.expect("login");
    client
        .find(Locator::Css("input[name=user]"))
        .await
        .expect("user")
        .send_keys("grace")
        .await
        .expect("type");
    client
        .find(Locator::Css("input[name=token]"))
        .await
        .expect("token")
        .send_keys(TOKEN)
        .await
        .expect("type");
    client
        .find(Locator::Css("form.filters button"))
        .await
        .expect("sign in")
        .click()
        .await
        .expect("sign in");
    client
        .wait()
        .for_element(Locator::Css("nav form.who"))
        .await
        .expect("signed in");
    client
        .goto(&format!("{base}/sagas/gate-1"))
        .await
        .expect("gate");
    assert!(
        count(&client, ".actions form").await >= 2,
        "cancel, resume, signal"
    );
    client
        .find(Locator::Css("form[data-action=cancel] input[name=reason]"))
        .await
        .expect("reason")
        .send_keys("the customer called")
        .await
        .expect("type");
    client
        .find(Locator::Css("form[data-action=cancel] button"))
        .await
        .expect("cancel")
        .click()
        .await
        .expect("cancel");
    client
        .wait()
        .for_element(Locator::Css("#audit tr[data-event=cancel_requested]"))
        .await
        .expect("the saga's page again, with the request in its log");
    let record = harness.store.load("gate-1").await.unwrap().unwrap();
    assert_eq!(
        record.cancel_requested.as_deref(),
        Some("the customer called")
    );
    let by = texts(
        &client,
        "#audit tr[data-event=cancel_requested] td:nth-child(8)",
    )
    .await;
    assert_eq!(by, ["grace"]);
    assert_eq!(orchestrator.recover_expired().await.expect("wake"), 1);
    client.refresh().await.expect("refresh");
    assert_eq!(
        texts(&client, "#header dd[data-field=state]").await,
        ["failed"]
    );

    // A signal, typed in by hand: the waiting saga takes it and goes on.
    client
        .goto(&format!("{base}/sagas/gate-2"))
        .await
        .expect("gate-2");
    // Each step's status: the waiting one says what for and until when.
    let statuses = texts(&client, "#steps td:nth-child(2)").await;
    assert!(
        statuses
            .iter()
            .any(|s| s.starts_with("waiting for its signal")),
        "{statuses:?}"
    );
    let until = texts(&client, "#steps td:nth-child(3)").await.concat();
    assert!(!until.trim().is_empty(), "until when: {statuses:?}");
    for (field, value) in [
        ("payload", "true"),
        ("key", "ticket-7"),
        ("reason", "approved on the phone"),
    ] {
        client
            .find(Locator::Css(&format!(
                "form[data-action=signal] input[name={field}]"
            )))
            .await
            .expect("a signal field")
            .send_keys(value)
            .await
            .expect("type");
    }
    client
        .find(Locator::Css("form[data-action=signal] button"))
        .await
        .expect("send")
        .click()
        .await
        .expect("send");
    client
        .wait()
        .for_element(Locator::Css("#audit tr[data-event=signal_received]"))
        .await
        .expect("the signal in the log");
    assert_eq!(orchestrator.recover_expired().await.expect("wake"), 1);
    client.refresh().await.expect("refresh");
    assert_eq!(
        texts(&client, "#header dd[data-field=state]").await,
        ["completed"]
    );

    client.goto(&format!("{base}/stats")).await.expect("stats");
    assert_eq!(count(&client, "#states tbody tr").await, 2, "shop and gate");
    if backend == Backend::Sqlite {
        shot(&client, "console-stats").await;
    }
    // Retention, as a dry run: counts, deletes nothing, and is recorded with who asked.
    client
        .find(Locator::Css("form[action='/prune'] button"))
        .await
        .expect("prune")
        .click()
        .await
        .expect("prune");
    let pruned = client
        .wait()
        .for_element(Locator::Id("pruned"))
        .await
        .expect("the prune report")
        .text()
        .await
        .expect("text");
    assert!(
        pruned.starts_with("would delete 0 finished sagas"),
        "{pruned}"
    );
    client.close().await.expect("close the browser");
    harness.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser_on_sqlite() {
    drive(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser_on_postgres() {
    drive(Backend::Postgres).await;
}
