//! Wake-ups without polling: one pub/sub connection per runtime subscribes to the `wake`
//! channel of every topic it consumes. The scripts publish when a pending list goes from
//! empty to non-empty or a delayed message becomes the earliest; the listener turns that
//! into a `Notify` permit for the topic's driver, which then fetches. Pub/sub can drop a
//! message while reconnecting, so after every (re)subscribe all drivers fetch once, and each
//! driver also fetches every `poll_interval` as a safety net.
//!
//! The same connection subscribes to each topic's push channel of this consumer
//! (`<wake>:<consumer>`), on which a producer hands a new message straight to an idle
//! consumer (`push_to_parked` in lib.lua); the listener passes those to the driver.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch, Notify};

use crate::client::Client;

/// Where the messages of one channel go.
pub(crate) enum Route {
    /// A topic's wake channel: its driver fetches.
    Wake(Arc<Notify>),
    /// A topic's push channel of this consumer: the message goes to its driver.
    Push(mpsc::UnboundedSender<Vec<u8>>),
}

pub(crate) async fn listen(
    client: Client,
    channels: HashMap<String, Route>,
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
            // (and parks the consumer again: a producer dropped it while nobody listened)
            for route in channels.values() {
                if let Route::Wake(notify) = route {
                    notify.notify_one();
                }
            }
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                match channels.get(message.get_channel_name()) {
                    Some(Route::Wake(notify)) => notify.notify_one(),
                    // a driver that already stopped cannot take it: its lease lapses and
                    // the message is delivered again (the driver leaves `waiting` when its
                    // stop begins, so this needs a push already on its way then)
                    Some(Route::Push(driver)) => {
                        let _ = driver.send(message.get_payload_bytes().to_vec());
                    }
                    None => {}
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
