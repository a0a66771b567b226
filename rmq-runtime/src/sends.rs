//! Sends that overlap share a call. A client has at most [`CALLS_AT_ONCE`] produce calls
//! to a topic on their way to Redis; a send that finds them all on their way waits, and
//! when one returns, every send that waited goes with the others, as one produce call (a
//! batch: `MULTI` or one `produce.lua` call, see producer.rs), from a task of its own; and
//! so on for those that came meanwhile.
//!
//! One task sending one message at a time (the latency and produce-serial scenarios), or
//! two tasks at once, never wait here. With more, Redis is busy with the calls on their way
//! anyway, and a message costs it its share of a batch rather than a whole call.
//! `produce-serial --producers N`, alternating with the client before this (sends/s, Redis
//! CPU a message): 4 tasks 43-64k -> 53-68k, 16 tasks 72-94k (9.3-11.9 µs) -> 124-162k
//! (4.2-5.7 µs), 64 tasks 63-85k -> 197-288k (2.2-3.3 µs); 1 and 2 tasks unchanged.
//!
//! Each send keeps its own outcome: its id, whether it was a duplicate (a batch reports
//! duplicates by position), or the call's error. A send's future may be dropped at any
//! point, as any future: its call then hands the sends waiting for it over all the same
//! (see [`HandOver`]).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::client::Client;
use crate::error::Error;
use crate::producer::{produce_prepared, Prepared, Produced};

/// The topics with calls on their way, each with the sends waiting for one to return.
#[derive(Default)]
pub(crate) struct Sends {
    topics: Mutex<HashMap<Box<str>, Calls>>,
}

/// A topic's calls on their way, and the sends waiting for one of them to return.
#[derive(Default)]
struct Calls {
    on_their_way: usize,
    waiting: Vec<Waiting>,
}

/// Calls to one topic a client has on their way at most before sends wait. Two: one or
/// two tasks sending go at once, as they did before sends waited (with one, two tasks
/// took turns: 46k -> 24k sends/s); more tasks make Redis busy enough that a send loses
/// little by waiting for a call to return, and then goes in a batch (see the module docs).
const CALLS_AT_ONCE: usize = 2;

/// A send waiting for a call on its way to return.
struct Waiting {
    message: Prepared,
    reply: oneshot::Sender<Result<Produced, Error>>,
}

impl Sends {
    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, Calls>> {
        // a panic elsewhere while holding it left the map whole: every change is one call
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The sends that waited while a call to `topic` was on its way, to go next in its
    /// place now that it returned; or `None` when none did, and its place is free.
    fn next(&self, topic: &str) -> Option<Vec<Waiting>> {
        let mut topics = self.lock();
        let calls = topics.get_mut(topic)?;
        if !calls.waiting.is_empty() {
            return Some(std::mem::take(&mut calls.waiting));
        }
        free_place(&mut topics, topic);
        None
    }

    /// A call to `topic` ended without handing its place over (see [`Stop`]).
    fn end(&self, topic: &str) {
        free_place(&mut self.lock(), topic);
    }
}

/// One call to `topic` fewer on its way. When it was the last, the topic's entry goes, and
/// with it any sends still waiting, which are told that theirs was interrupted (their
/// answers' senders are dropped).
fn free_place(topics: &mut HashMap<Box<str>, Calls>, topic: &str) {
    if let Some(calls) = topics.get_mut(topic) {
        calls.on_their_way = calls.on_their_way.saturating_sub(1);
        if calls.on_their_way == 0 {
            topics.remove(topic);
        }
    }
}

/// Stores one prepared message of `topic`: at once when fewer than [`CALLS_AT_ONCE`]
/// calls to `topic` are on their way from this client, otherwise with the sends waiting
/// for one of them to return.
pub(crate) async fn send(
    client: &Client,
    topic: &str,
    message: Prepared,
) -> Result<Produced, Error> {
    let turn = {
        let mut topics = client.sends().lock();
        if !topics.contains_key(topic) {
            topics.insert(topic.into(), Calls::default());
        }
        let calls = topics.get_mut(topic).expect("inserted above");
        if calls.on_their_way < CALLS_AT_ONCE {
            calls.on_their_way += 1;
            Turn::Now(message)
        } else {
            let id = message.id.to_string();
            let (reply, answer) = oneshot::channel();
            calls.waiting.push(Waiting { message, reply });
            Turn::Wait(id, answer)
        }
    };
    match turn {
        Turn::Now(message) => {
            let _next = HandOver { client, topic };
            let mut produced = produce_prepared(client, topic, vec![message]).await?;
            produced
                .pop()
                .ok_or_else(|| Error::Protocol("produce returned no result".into()))
        }
        Turn::Wait(id, answer) => answer
            .await
            .unwrap_or_else(|_| Err(Error::Interrupted { id })),
    }
}

enum Turn {
    /// A place is free: this one goes.
    Now(Prepared),
    /// Waiting (message id, answer) for a call on its way to return.
    Wait(String, oneshot::Receiver<Result<Produced, Error>>),
}

/// Held by a send whose call is on its way: when it is dropped (the call returned, or the
/// send's future was dropped), the sends that waited go next in its place, from a task of
/// their own, so that they do not depend on this send's caller polling it.
struct HandOver<'a> {
    client: &'a Client,
    topic: &'a str,
}

impl Drop for HandOver<'_> {
    fn drop(&mut self) {
        let Some(waiting) = self.client.sends().next(self.topic) else {
            return;
        };
        let stop = Stop {
            client: self.client.clone(),
            topic: self.topic.into(),
            done: false,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(flush(stop, waiting));
            }
            // dropped outside any runtime: nothing can send them, and each is told so (by
            // `stop`, dropped here)
            Err(_) => drop((stop, waiting)),
        }
    }
}

/// Sends `batch` as one produce call, answers each of its sends, and goes on with those
/// that came meanwhile until none did.
async fn flush(mut stop: Stop, mut batch: Vec<Waiting>) {
    let (client, topic) = (&stop.client, &*stop.topic);
    loop {
        let (messages, replies): (Vec<Prepared>, Vec<_>) =
            batch.into_iter().map(|w| (w.message, w.reply)).unzip();
        match produce_prepared(client, topic, messages).await {
            Ok(produced) => {
                for (reply, produced) in replies.into_iter().zip(produced) {
                    let _gone = reply.send(Ok(produced));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _gone = reply.send(Err(e.for_another()));
                }
            }
        }
        match client.sends().next(topic) {
            Some(next) => batch = next,
            None => break,
        }
    }
    stop.done = true;
}

/// Owned by [`flush`]'s future from before it is spawned: should that future be dropped
/// before it is done (its runtime shut down, even before it first ran), its sends are told
/// that theirs was interrupted, and its place is freed. The sends still waiting then go
/// with the next call to return, or, when it was the last call on its way, are told so
/// too.
struct Stop {
    client: Client,
    topic: Box<str>,
    done: bool,
}

impl Drop for Stop {
    fn drop(&mut self) {
        if !self.done {
            self.client.sends().end(&self.topic);
        }
    }
}
