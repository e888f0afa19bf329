//! Request coalescing: identical misses in flight at once make one upstream request.
//!
//! The first miss for a key becomes the *leader* of a [`Flight`] and goes upstream; identical
//! requests arriving while it is in flight *follow* it. The leader publishes the answer's head and
//! each body chunk as it relays them, so followers of a stream get every token as the leader
//! does, and a follower that joins late first gets the chunks it missed (they are `Bytes`, shared,
//! not copied). A leader whose answer cannot be shared (not a storable 200) or that fails before
//! its commit point *releases* its followers, who then go upstream on their own.
//!
//! Followers watch the flight through a `watch` channel of a change counter; the data sits behind
//! a mutex held only to copy out `Bytes` handles, never across an `.await`.

use super::key::CacheKey;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

/// The head of a shareable answer: always a 200.
#[derive(Debug)]
pub struct Head {
    /// End-to-end headers, as a cache entry keeps them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub content_length: Option<u64>,
    pub sse: bool,
}

/// How a flight ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlightEnd {
    /// The whole answer was published.
    Complete,
    /// The answer was cut short after its head (upstream failure mid-body).
    Interrupted,
    /// No shareable answer: followers must go upstream themselves.
    Released,
}

#[derive(Default)]
struct State {
    head: Option<Arc<Head>>,
    chunks: Vec<Bytes>,
    end: Option<FlightEnd>,
}

/// One upstream request that identical requests share.
pub struct Flight {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl Flight {
    fn new() -> Flight {
        Flight {
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
        }
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.end.is_some() {
                return;
            }
            f(&mut st);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// The leader committed to a shareable answer.
    pub fn publish_head(&self, head: Arc<Head>) {
        self.update(|st| st.head = Some(head));
    }

    pub fn publish_chunk(&self, chunk: Bytes) {
        self.update(|st| st.chunks.push(chunk));
    }

    /// The end of the flight; [`FlightEnd::Released`] after a head counts as interrupted.
    pub fn finish(&self, end: FlightEnd) {
        self.update(|st| {
            st.end = Some(match end {
                FlightEnd::Released if st.head.is_some() => FlightEnd::Interrupted,
                e => e,
            })
        });
    }

    pub fn has_head(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .head
            .is_some()
    }
}

/// A leader's role or a follower's view of a flight.
pub enum Role {
    Leader(Arc<Flight>),
    Follower(Follower),
}

/// The flights of one store, by key.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<CacheKey, Arc<Flight>>>,
}

impl Flights {
    /// Lead a new flight for `key`, or follow the one in the air.
    pub fn join(&self, key: CacheKey) -> Role {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = map.get(&key) {
            return Role::Follower(Follower::new(f.clone()));
        }
        let f = Arc::new(Flight::new());
        map.insert(key, f.clone());
        Role::Leader(f)
    }

    /// Take `flight` off the board: requests that come later do not join it.
    pub fn leave(&self, key: &CacheKey, flight: &Arc<Flight>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }

    /// Flights in the air (for tests and status).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// What a follower reads next.
#[derive(Debug)]
pub enum Next {
    Chunks(Vec<Bytes>),
    End(FlightEnd),
    /// Nothing happened before the deadline given.
    TimedOut,
}

/// A follower's cursor on a flight.
pub struct Follower {
    flight: Arc<Flight>,
    rx: watch::Receiver<u64>,
    next: usize,
}

impl Follower {
    fn new(flight: Arc<Flight>) -> Follower {
        let rx = flight.changed.subscribe();
        Follower {
            flight,
            rx,
            next: 0,
        }
    }

    /// Wait until `until` for the leader's head; `None` when the leader released its followers
    /// or took too long.
    pub async fn head(&mut self, until: Instant) -> Option<Arc<Head>> {
        loop {
            // Mark the current version seen *before* reading, so no change is missed.
            self.rx.borrow_and_update();
            {
                let st = self.flight.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(h) = &st.head {
                    return Some(h.clone());
                }
                if st.end.is_some() {
                    return None;
                }
            }
            match timeout_at(until, self.rx.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in the flight we hold, so only the timeout ends the wait.
                _ => return None,
            }
        }
    }

    /// The chunks published since the last call, or the end, waiting until `until`.
    pub async fn next(&mut self, until: Instant) -> Next {
        loop {
            self.rx.borrow_and_update();
            {
                let st = self.flight.state.lock().unwrap_or_else(|e| e.into_inner());
                if st.chunks.len() > self.next {
                    let new = st.chunks[self.next..].to_vec();
                    self.next = st.chunks.len();
                    return Next::Chunks(new);
                }
                if let Some(end) = st.end {
                    return Next::End(end);
                }
            }
            match timeout_at(until, self.rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Next::TimedOut,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn head() -> Arc<Head> {
        Arc::new(Head {
            headers: vec![],
            content_length: None,
            sse: true,
        })
    }

    #[tokio::test]
    async fn followers_get_every_chunk_including_those_before_they_joined() {
        let flights = Flights::default();
        let k = CacheKey([1; 32]);
        let Role::Leader(leader) = flights.join(k) else {
            panic!("first is the leader")
        };
        let Role::Follower(mut early) = flights.join(k) else {
            panic!("second follows")
        };
        leader.publish_head(head());
        leader.publish_chunk(Bytes::from_static(b"a"));
        let Role::Follower(mut late) = flights.join(k) else {
            panic!("third follows")
        };
        let until = Instant::now() + Duration::from_secs(5);
        let reader = tokio::spawn(async move {
            assert!(early.head(until).await.is_some());
            let mut got = Vec::new();
            loop {
                match early.next(until).await {
                    Next::Chunks(c) => got.extend(c),
                    Next::End(e) => return (got, e),
                    Next::TimedOut => panic!("timed out"),
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.publish_chunk(Bytes::from_static(b"b"));
        leader.finish(FlightEnd::Complete);
        flights.leave(&k, &leader);
        assert_eq!(flights.len(), 0);
        let (got, end) = reader.await.unwrap();
        assert_eq!(
            got,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
        assert_eq!(end, FlightEnd::Complete);
        assert!(late.head(until).await.is_some());
        assert!(matches!(late.next(until).await, Next::Chunks(c) if c.len() == 2));
        assert!(matches!(
            late.next(until).await,
            Next::End(FlightEnd::Complete)
        ));
        // Once the flight left the board, the next request leads a new one.
        assert!(matches!(flights.join(k), Role::Leader(_)));
    }

    #[tokio::test]
    async fn a_release_before_the_head_sends_followers_on_their_own() {
        let flights = Flights::default();
        let k = CacheKey([2; 32]);
        let Role::Leader(leader) = flights.join(k) else {
            panic!()
        };
        let Role::Follower(mut f) = flights.join(k) else {
            panic!()
        };
        let waiter = tokio::spawn(async move {
            f.head(Instant::now() + Duration::from_secs(5))
                .await
                .is_none()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.finish(FlightEnd::Released);
        assert!(waiter.await.unwrap(), "released followers get no head");
        // A release after the head is an interruption; nothing is published after the end.
        let leader2 = Arc::new(Flight::new());
        leader2.publish_head(head());
        leader2.finish(FlightEnd::Released);
        leader2.publish_chunk(Bytes::from_static(b"late"));
        let mut f2 = Follower::new(leader2);
        let until = Instant::now() + Duration::from_secs(1);
        assert!(f2.head(until).await.is_some());
        assert!(matches!(
            f2.next(until).await,
            Next::End(FlightEnd::Interrupted)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_leader_times_followers_out() {
        let flights = Flights::default();
        let k = CacheKey([3; 32]);
        let _leader = flights.join(k);
        let Role::Follower(mut f) = flights.join(k) else {
            panic!()
        };
        let started = Instant::now();
        assert!(f.head(started + Duration::from_secs(30)).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }
}
