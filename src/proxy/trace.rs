//! A request's part of its trace (see [`crate::trace`]): the ids it propagates, and, when the
//! request is sampled and an exporter is configured, what its spans will say: one server span
//! for the request (route, cluster, status, tries, cache) and one client span per try (peer,
//! outcome, the reason the try before it failed). The spans are built and handed to the exporter
//! once the request has ended.
//!
//! Sampling follows the client: a valid `traceparent` marked sampled is sampled, one marked not
//! sampled is not (OpenTelemetry's parent-based sampler); a request without one is sampled at
//! `tracing.sample_ratio`, decided by its trace id.

use super::ctx::Ctx;
use crate::snapshot::Snapshot;
use crate::trace::export::Exporter;
use crate::trace::{self, SpanId, TraceId, TraceParent, SAMPLED};
use bytes::Bytes;
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use pingora::http::RequestHeader;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

/// The trace of one request.
pub struct Trace {
    trace_id: TraceId,
    /// The client's span, when it sent a valid `traceparent`.
    parent: Option<SpanId>,
    /// The span id of the first try (in the header every try starts from).
    first_try: SpanId,
    sampled: bool,
    tries: u32,
    /// Present only when the spans will be exported.
    rec: Option<Box<Recording>>,
}

struct Recording {
    /// Switchyard's span for this request.
    span: SpanId,
    exporter: Arc<Exporter>,
    start: SystemTime,
    tries: Vec<TrySpan>,
}

struct TrySpan {
    span: SpanId,
    cluster: usize,
    peer: usize,
    start: SystemTime,
    end: Option<SystemTime>,
    outcome: &'static str,
    status: Option<u16>,
    retry_reason: Option<&'static str>,
}

impl Trace {
    /// The trace of a request with header `req`, under `snap`'s tracing settings.
    pub fn start(req: &RequestHeader, snap: &Snapshot) -> Trace {
        // A name made once (looking up by `&str` parses the name on every request).
        static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
        // Two traceparent headers are as good as none (the spec: ignore them); most requests
        // have none, which one lookup tells.
        let parent = req.headers.get(&TRACEPARENT).and_then(|v| {
            let mut values = req.headers.get_all(&TRACEPARENT).iter();
            (values.nth(1).is_none()).then(|| TraceParent::parse(v.as_bytes()))?
        });
        // Ids are drawn only where they are used: a trace id when the client sent none, the
        // request's own span only when it is recorded.
        let trace_id = parent.map_or_else(trace::new_trace_id, |p| p.trace_id);
        let first_try = trace::new_span_id();
        let exporter = snap.exporter.as_ref();
        let sampled = match parent {
            Some(p) => p.flags & SAMPLED != 0,
            None => {
                exporter.is_some()
                    && trace::sampled_by_ratio(&trace_id, snap.config.tracing.sample_ratio)
            }
        };
        let rec = exporter.filter(|_| sampled).map(|e| {
            Box::new(Recording {
                span: trace::new_span_id(),
                exporter: e.clone(),
                start: SystemTime::now(),
                tries: Vec::new(),
            })
        });
        Trace {
            trace_id,
            parent: parent.map(|p| p.parent_id),
            first_try,
            sampled,
            tries: 0,
            rec,
        }
    }

    /// The `traceparent` the upstream request header carries (the first try's).
    pub fn upstream_value(&self) -> trace::HeaderValue {
        trace::header_value(&self.trace_id, &self.first_try, self.sampled)
    }

    /// How many tries have started (the index the next one gets).
    pub fn tries_started(&self) -> usize {
        self.tries as usize
    }

    /// A try to peer `peer` of cluster `cluster` starts with request head `head`; `retry_reason`
    /// is why it was started (why the try before failed, or `hedge`). The head to send when it
    /// is not `head` (a retry's own span id).
    pub fn try_started(
        &mut self,
        head: &[u8],
        cluster: usize,
        peer: usize,
        retry_reason: Option<&'static str>,
    ) -> Option<Vec<u8>> {
        self.tries += 1;
        let (span, head) = match self.tries {
            1 => (self.first_try, None),
            _ => {
                let span = trace::new_span_id();
                (span, trace::with_span(head, &span))
            }
        };
        if let Some(r) = &mut self.rec {
            r.tries.push(TrySpan {
                span,
                cluster,
                peer,
                start: SystemTime::now(),
                end: None,
                outcome: "",
                status: None,
                retry_reason,
            });
        }
        head
    }

    /// Try number `index` (from 0, in the order they started) ended before its commit point
    /// (`outcome`: a retry reason, or `cancelled` for a hedge that lost), or reached it
    /// (`committed`, with the status); a committed try's span lasts to the end of the request.
    pub fn try_ended(&mut self, index: usize, outcome: &'static str, status: Option<u16>) {
        let Some(t) = self.rec.as_mut().and_then(|r| r.tries.get_mut(index)) else {
            return;
        };
        t.outcome = outcome;
        t.status = status;
        if outcome != "committed" {
            t.end = Some(SystemTime::now());
        }
    }
}

/// A try starts (see [`Trace::try_started`]): the head it sends.
pub(super) fn try_started(
    ctx: &mut Ctx,
    head: Bytes,
    at: (usize, usize),
    reason: Option<&'static str>,
) -> Bytes {
    match ctx.trace.as_mut() {
        Some(t) => t
            .try_started(&head, at.0, at.1, reason)
            .map_or(head, Bytes::from),
        None => head,
    }
}

/// Try number `index` ended (see [`Trace::try_ended`]).
pub(super) fn try_ended(ctx: &mut Ctx, index: usize, outcome: &'static str, status: Option<u16>) {
    if let Some(t) = ctx.trace.as_mut() {
        t.try_ended(index, outcome, status);
    }
}

/// The index the next try will get.
pub(super) fn tries_started(ctx: &Ctx) -> usize {
    ctx.trace.as_ref().map_or(0, Trace::tries_started)
}

/// Hand the spans of a sampled request to the exporter (the request has ended).
pub(super) fn export(ctx: &Ctx, snap: &Snapshot) {
    let Some((t, rec)) = ctx
        .trace
        .as_ref()
        .and_then(|t| Some((t, t.rec.as_deref()?)))
    else {
        return;
    };
    let end = SystemTime::now();
    let scope = InstrumentationScope::builder("switchyard")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let route = ctx.route.map(|r| snap.routes[r].cfg.name.as_str());
    let mut attrs = vec![
        KeyValue::new("http.response.status_code", i64::from(ctx.status)),
        KeyValue::new("switchyard.tries", i64::from(ctx.tries)),
    ];
    if let Some(r) = route {
        attrs.push(KeyValue::new("switchyard.route", r.to_string()));
    }
    if let Some(c) = ctx.cluster {
        attrs.push(KeyValue::new(
            "switchyard.cluster",
            snap.clusters[c].cfg.name.clone(),
        ));
    }
    if let Some(c) = ctx.cache {
        attrs.push(KeyValue::new("switchyard.cache", c));
    }
    if let Some(id) = &ctx.request_id {
        attrs.push(KeyValue::new("switchyard.request_id", id.clone()));
    }
    let failed = ctx.status >= 500 || ctx.status == 0;
    let server = SpanData {
        span_context: context(&t.trace_id, &rec.span),
        parent_span_id: t
            .parent
            .map_or(opentelemetry::trace::SpanId::INVALID, span_id),
        parent_span_is_remote: t.parent.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(route.map_or_else(|| "request".to_string(), |r| format!("route {r}"))),
        start_time: rec.start,
        end_time: end,
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if failed {
            Status::error(format!("answered {}", ctx.status))
        } else {
            Status::Unset
        },
        instrumentation_scope: scope.clone(),
    };
    rec.exporter.export(server);
    for (i, try_span) in rec.tries.iter().enumerate() {
        let cluster = &snap.clusters[try_span.cluster];
        let peer = cluster.peers.get(try_span.peer).map(|p| p.name.clone());
        let mut attrs = vec![
            KeyValue::new("switchyard.try", (i + 1) as i64),
            KeyValue::new("switchyard.cluster", cluster.cfg.name.clone()),
            KeyValue::new("switchyard.try.outcome", try_span.outcome),
        ];
        if let Some(p) = peer {
            attrs.push(KeyValue::new("server.address", p));
        }
        if let Some(s) = try_span.status {
            attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        if let Some(r) = try_span.retry_reason {
            attrs.push(KeyValue::new("switchyard.retry.reason", r));
        }
        let committed = try_span.outcome == "committed";
        rec.exporter.export(SpanData {
            span_context: context(&t.trace_id, &try_span.span),
            parent_span_id: span_id(rec.span),
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: Cow::Borrowed("try"),
            start_time: try_span.start,
            end_time: try_span.end.unwrap_or(end),
            attributes: attrs,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if committed || try_span.outcome.is_empty() {
                Status::Unset
            } else {
                Status::error(try_span.outcome)
            },
            instrumentation_scope: scope.clone(),
        });
    }
}

fn context(trace: &TraceId, span: &SpanId) -> SpanContext {
    SpanContext::new(
        opentelemetry::trace::TraceId::from_bytes(*trace),
        span_id(*span),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

fn span_id(s: SpanId) -> opentelemetry::trace::SpanId {
    opentelemetry::trace::SpanId::from_bytes(s)
}
