//! Wake-ups without polling: one pub/sub connection per runtime subscribes to the `wake`
//! channel of every topic it consumes. The scripts publish when a pending list goes from
//! empty to non-empty or a delayed message becomes the earliest; the listener turns that
//! into a `Notify` permit for the topic's driver, which then fetches. Pub/sub can drop a
//! message while reconnecting, so after every (re)subscribe all drivers fetch once, and each
//! driver also fetches every `poll_interval` as a safety net.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{watch, Notify};

use crate::client::Client;

pub(crate) async fn listen(
    client: Client,
    channels: HashMap<String, Arc<Notify>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let session = async {
            let mut pubsub = client.pubsub().await?;
            pubsub
                .subscribe(channels.keys().collect::<Vec<_>>())
                .await?;
            // anything produced before the subscription took effect is found by this fetch
            for notify in channels.values() {
                notify.notify_one();
            }
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                if let Some(notify) = channels.get(message.get_channel_name()) {
                    notify.notify_one();
                }
            }
            Ok::<_, redis::RedisError>(())
        };
        tokio::select! {
            result = session => {
                match result {
                    Ok(()) => {
                        tracing::warn!("wake-up connection closed; reconnecting");
                        backoff = Duration::from_millis(50);
                    }
                    Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "wake-up connection failed; reconnecting"),
                }
            }
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}
