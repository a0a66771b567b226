//! rmq in one file: two topics, a high-priority message, a delayed one, a handler that fails
//! once and succeeds on retry, and a graceful shutdown once everything is handled.
//!
//! ```sh
//! cargo run --example quickstart          # uses REDIS_URL, else 127.0.0.1:6379, else a private redis-server
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("quickstart.order_created", retries = 3, retry_delays = ["500ms"], timeout = "10s")]
#[derive(Debug, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: String,
    pub user_id: u64,
    pub amount: f64,
}

#[topic("quickstart.email", priority = "low", ttl = "1h")]
#[derive(Debug, Serialize, Deserialize)]
pub struct SendEmail {
    pub to: String,
    pub subject: String,
}

/// Ids handled so far, so `main` knows when everything it produced is done.
static HANDLED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);
static STARTED: Mutex<Option<Instant>> = Mutex::new(None);

fn elapsed() -> String {
    let started = STARTED.lock().unwrap().unwrap_or_else(Instant::now);
    format!("{:>6.3}s", started.elapsed().as_secs_f64())
}

fn mark_handled(ctx: &Context) {
    HANDLED
        .lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(ctx.id().to_string());
}

#[handler(concurrency = 2)]
async fn charge(order: OrderCreated, ctx: Context) -> Result<(), HandlerError> {
    if order.order_id == "ORD_FLAKY" && FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        println!(
            "{} charge   {} attempt {}: payment service timed out -> will retry",
            elapsed(),
            order.order_id,
            ctx.attempt()
        );
        return Err(HandlerError::msg("payment service timed out"));
    }
    println!(
        "{} charge   {} for user {}: {:.2} (attempt {})",
        elapsed(),
        order.order_id,
        order.user_id,
        order.amount,
        ctx.attempt()
    );
    mark_handled(&ctx);
    Ok(())
}

#[handler]
async fn email(mail: SendEmail, ctx: Context) -> anyhow::Result<()> {
    println!("{} email    to {}: {:?}", elapsed(), mail.to, mail.subject);
    mark_handled(&ctx);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Keep the private server alive for the whole run.
    let _private_redis = choose_redis()?;
    *STARTED.lock().unwrap() = Some(Instant::now());
    let client = rmq_runtime::global_client().await?;

    let mut expected = Vec::new();
    expected.push(
        SendEmail {
            to: "ada@example.com".into(),
            subject: "Welcome".into(),
        }
        .produce()
        .await?,
    );
    expected.push(
        OrderCreated {
            order_id: "ORD_1".into(),
            user_id: 7,
            amount: 9.99,
        }
        .produce()
        .await?,
    );
    expected.push(
        OrderCreated {
            order_id: "ORD_VIP".into(),
            user_id: 1,
            amount: 999.0,
        }
        .send()
        .priority(Priority::High)
        .await?
        .id,
    );
    expected.push(
        OrderCreated {
            order_id: "ORD_LATER".into(),
            user_id: 8,
            amount: 5.0,
        }
        .send()
        .delay(Duration::from_secs(2))
        .await?
        .id,
    );
    expected.push(
        OrderCreated {
            order_id: "ORD_FLAKY".into(),
            user_id: 9,
            amount: 1.5,
        }
        .produce()
        .await?,
    );
    println!(
        "{} produced {} messages (ORD_VIP high priority, ORD_LATER delayed 2s, ORD_FLAKY fails once)",
        elapsed(),
        expected.len()
    );

    let runtime = rmq_runtime::builder().client(&client).spawn().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = {
            let handled = HANDLED.lock().unwrap();
            let handled = handled.as_ref();
            expected
                .iter()
                .all(|id| handled.is_some_and(|h| h.contains(id.as_str())))
        };
        if done {
            break;
        }
        if Instant::now() > deadline {
            runtime.shutdown().await?;
            anyhow::bail!("not every message was handled within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{} all {} handled; shutting down gracefully",
        elapsed(),
        expected.len()
    );
    runtime.shutdown().await?;
    println!("{} stopped", elapsed());
    Ok(())
}

/// REDIS_URL if set; else the Redis on 127.0.0.1:6379 if one answers; else a private
/// throwaway redis-server on a free port.
fn choose_redis() -> anyhow::Result<Option<rmq_testkit::RedisServer>> {
    let mut config = Config::from_env()?;
    config.queue_prefix = format!("{}quickstart", config.queue_prefix);
    let server = if std::env::var_os("REDIS_URL").is_some() {
        println!("using REDIS_URL ({})", redact(&config.redis_url));
        None
    } else if rmq_testkit::redis_answers("127.0.0.1:6379") {
        println!("using the Redis on 127.0.0.1:6379");
        None
    } else {
        let server = rmq_testkit::RedisServer::start()?;
        println!(
            "nothing answers on 127.0.0.1:6379 and REDIS_URL is not set: started a private redis-server at {} (removed on exit)",
            server.url()
        );
        config.redis_url = server.url();
        Some(server)
    };
    rmq_runtime::init(config)?;
    Ok(server)
}

fn redact(url: &str) -> String {
    match url.rfind('@') {
        Some(at) => format!("redis://***{}", &url[at..]),
        None => url.to_string(),
    }
}
