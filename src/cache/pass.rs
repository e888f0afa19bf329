//! The cache stage of the request path: [`lookup`] answers from the store or from an identical
//! request in flight, or sends the request on with a [`Pass`] that records, shares and stores the
//! committed answer, and answers stale when nothing upstream can.

use super::coalesce::{self, FlightEnd, Head, Role};
use super::key::{self, CacheKey, RequestControl};
use super::serve::{self, Followed};
use super::store::{self, Entry, Found};
use super::{Counted, RouteCache, Status};
use crate::body::RequestBody;
use crate::config::CacheConfig;
use crate::downstream::Downstream;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::Result;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What the request path does after [`lookup`].
pub enum Lookup<'a> {
    /// The cache answered (HIT or a coalesced answer); the request is over.
    Answered {
        status: u16,
        /// The `x-cache-status` it carried.
        cache: &'static str,
        /// The answer was cut short: do not reuse the client connection.
        cut: bool,
    },
    /// Go on to the tries, with the pass that records and stores the answer.
    Upstream(Pass<'a>),
}

/// What the cache stage knows of the request besides the client.
pub struct Request<'b> {
    pub body: &'b RequestBody,
    pub request_id: &'b str,
    pub deadline: Instant,
    /// The route's idle timeout.
    pub idle: Duration,
    /// The request's host, when the route does not match on one (it then takes part in the key).
    pub host: Option<&'b str>,
}

/// The cache stage of a request on a cached route (its `cache` with its config `cfg`): answer it
/// from the store, follow an identical request in flight, or let it go upstream with a [`Pass`].
/// `HEAD` requests are not cached (their answers have no body to store).
pub async fn lookup<'a>(
    cache: &'a RouteCache,
    cfg: &'a CacheConfig,
    client: &mut impl Downstream,
    r: Request<'_>,
) -> Result<Lookup<'a>> {
    let Request {
        body,
        request_id,
        deadline,
        idle,
        host,
    } = r;
    let bypass = || Lookup::Upstream(Pass::new(cache, cfg, Status::Bypass, None));
    let req = client.req_header();
    let control = key::request_control(&req.headers);
    if control == RequestControl::NoStore || req.method == http::Method::HEAD {
        return Ok(bypass());
    }
    let json = body.json();
    if cfg.deterministic_only && !key::deterministic(json) {
        return Ok(bypass());
    }
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = key::Target {
        route: cache.route(),
        method: &req.method,
        path_and_query: path,
        host,
    };
    let k = key::key(target, &req.headers, &cfg.vary_headers, body.bytes(), json);
    if control == RequestControl::NoCache {
        return Ok(Lookup::Upstream(Pass::new(
            cache,
            cfg,
            Status::Miss,
            Some(k),
        )));
    }
    let found = cache
        .store
        .lookup(&k, Instant::now(), cfg.ttl, cfg.stale_if_error)
        .await;
    let status = match found {
        Found::Fresh(e, age) => {
            cache.count(Counted::Status(Status::Hit));
            serve::entry(client, &e, age, Status::Hit, request_id).await?;
            return Ok(Lookup::Answered {
                status: 200,
                cache: Status::Hit.header(),
                cut: false,
            });
        }
        Found::Expired(..) => Status::Expired,
        Found::Missing => Status::Miss,
    };
    match cache.flights.join(k) {
        Role::Leader(flight) => {
            let mut pass = Pass::new(cache, cfg, status, Some(k));
            pass.leader = Some(flight);
            Ok(Lookup::Upstream(pass))
        }
        Role::Follower(f) => {
            let t = cfg.lock_timeout;
            match serve::follow(client, f, status, request_id, t, idle, deadline).await? {
                Followed::OnOwn => Ok(Lookup::Upstream(Pass::new(cache, cfg, status, Some(k)))),
                done => {
                    cache.count(Counted::Coalesced);
                    Ok(Lookup::Answered {
                        status: 200,
                        cache: status.header(),
                        cut: matches!(done, Followed::Cut),
                    })
                }
            }
        }
    }
}

/// What is being recorded of a committed answer.
struct Recording {
    head: Arc<Head>,
    chunks: Vec<Bytes>,
    len: usize,
    /// Entry size so far (headers and bookkeeping included).
    size: usize,
}

/// A cacheable request on its way upstream: marks the answer with `x-cache-status`, records it
/// for the store, publishes it to coalesced followers, and can answer stale when nothing else
/// can. Counted in `switchyard_cache_requests_total` when dropped, by its final status.
pub struct Pass<'a> {
    cache: &'a RouteCache,
    cfg: &'a CacheConfig,
    status: Status,
    /// `None` for BYPASS.
    key: Option<CacheKey>,
    /// Set when this request leads a flight.
    leader: Option<Arc<coalesce::Flight>>,
    recording: Option<Recording>,
}

impl<'a> Pass<'a> {
    fn new(
        cache: &'a RouteCache,
        cfg: &'a CacheConfig,
        status: Status,
        key: Option<CacheKey>,
    ) -> Self {
        Pass {
            cache,
            cfg,
            status,
            key,
            leader: None,
            recording: None,
        }
    }

    /// The `x-cache-status` this request carries.
    pub fn status(&self) -> &'static str {
        self.status.header()
    }

    pub fn status_header(&self) -> (&'static str, String) {
        ("x-cache-status", self.status.header().to_string())
    }

    /// The committed answer's header, before it is written: decide whether to record it, share
    /// it with followers, and mark it.
    pub fn head(&mut self, header: &mut ResponseHeader) {
        if self.key.is_some() {
            let length = header
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let sse = crate::respond::is_sse(&header.headers);
            // An answer that ends with the connection cannot tell a complete body from one a
            // crashing peer cut short (an SSE stream can: it must end with `data: [DONE]`).
            let framed = length.is_some() || chunked(&header.headers) || sse;
            let storable = header.status == 200
                && framed
                && key::response_storable(&header.headers)
                && key::vary_covered(&header.headers, &self.cfg.vary_headers)
                && length.is_none_or(|n| n <= self.cfg.max_entry_bytes);
            if storable {
                let headers = serve::kept_headers(header);
                let size = store::entry_size(&headers, 0);
                let head = Arc::new(Head {
                    headers,
                    content_length: length,
                    sse,
                });
                if let Some(f) = &self.leader {
                    f.publish_head(head.clone());
                }
                self.recording = Some(Recording {
                    head,
                    chunks: Vec::new(),
                    len: 0,
                    size,
                });
            } else {
                self.release();
            }
        }
        let _ = header.insert_header("x-cache-status", self.status.header());
    }

    /// Still recording: worth reading the upstream to its end even if the client has left.
    pub fn recording(&self) -> bool {
        self.recording.is_some()
    }

    /// A body chunk of the committed answer.
    pub fn chunk(&mut self, chunk: &Bytes) {
        if let Some(f) = &self.leader {
            f.publish_chunk(chunk.clone());
        }
        let Some(rec) = &mut self.recording else {
            return;
        };
        rec.size += chunk.len();
        if rec.size as u64 > self.cfg.max_entry_bytes {
            // Too large to store: stop recording; followers already on it still get the rest,
            // but nobody new joins a flight whose answer will not be stored.
            self.recording = None;
            if let (Some(f), Some(k)) = (&self.leader, &self.key) {
                self.cache.flights.leave(k, f);
            }
            return;
        }
        rec.len += chunk.len();
        rec.chunks.push(chunk.clone());
    }

    /// The committed answer ended; `complete` when the upstream sent all of it.
    pub async fn end(&mut self, complete: bool) {
        if let (true, Some(rec), Some(k)) = (complete, self.recording.take(), self.key) {
            let body = serve::concat(&rec.chunks, rec.len);
            if !rec.head.sse || crate::sse::completed_cleanly(&body) {
                let headers = rec.head.headers.clone();
                let entry = Entry::new(k, Instant::now(), headers, body, rec.head.sse);
                // Stored before the flight leaves the board: a request arriving now finds one
                // or the other.
                let keep_for = self.cfg.ttl.saturating_add(self.cfg.stale_if_error);
                self.cache.put(entry, keep_for).await;
            }
        }
        self.recording = None;
        if let Some(f) = self.leader.take() {
            f.finish(if complete {
                FlightEnd::Complete
            } else {
                FlightEnd::Interrupted
            });
            if let Some(k) = &self.key {
                self.cache.flights.leave(k, &f);
            }
        }
    }

    /// Send this request's followers on their own (no shareable answer).
    fn release(&mut self) {
        if let Some(f) = self.leader.take() {
            f.finish(FlightEnd::Released);
            if let Some(k) = &self.key {
                self.cache.flights.leave(k, &f);
            }
        }
    }

    /// No upstream could answer: serve an expired entry within `stale_if_error` (STALE), or a
    /// fresh one an identical request stored meanwhile (HIT). Returns whether it answered.
    pub async fn serve_stored(
        &mut self,
        client: &mut impl Downstream,
        request_id: &str,
    ) -> Result<bool> {
        self.release();
        let Some(k) = &self.key else {
            return Ok(false);
        };
        let c = self.cfg;
        let found = self
            .cache
            .store
            .lookup(k, Instant::now(), c.ttl, c.stale_if_error)
            .await;
        let (e, age, status) = match found {
            Found::Fresh(e, age) => (e, age, Status::Hit),
            Found::Expired(e, age) => (e, age, Status::Stale),
            Found::Missing => return Ok(false),
        };
        self.status = status;
        serve::entry(client, &e, age, status, request_id).await?;
        Ok(true)
    }
}

/// Is the answer framed by chunked coding (as the upstream sent it)?
fn chunked(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("chunked"))
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        // A leader that never committed (every try failed) releases its followers.
        if let Some(f) = self.leader.take() {
            f.finish(if f.has_head() {
                FlightEnd::Interrupted
            } else {
                FlightEnd::Released
            });
            if let Some(k) = &self.key {
                self.cache.flights.leave(k, &f);
            }
        }
        self.cache.count(Counted::Status(self.status));
    }
}
