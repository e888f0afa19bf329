//! The OTLP export of spans: OpenTelemetry's batch span processor (a thread of its own that
//! sends a batch every second, or as soon as 512 spans are waiting) in front of the OTLP/HTTP
//! exporter (protobuf, `POST` to the endpoint).
//!
//! Export never waits on the request path: handing a span over is a `try_send` into a queue of
//! [`QUEUE`] spans. When the collector is slow or away and the queue is full, the span is dropped
//! and counted in `switchyard_trace_spans_dropped_total` (counted here: the SDK's own count of
//! its drops is private), as are the spans of an export request that failed.

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Spans waiting for export at most; more are dropped (and counted).
pub const QUEUE: usize = 4096;

/// How long one export request may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an exporter could not be made.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter for {endpoint}: {source}")]
pub struct ExportError {
    endpoint: String,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

/// An OTLP exporter to one endpoint. Dropping it flushes what is queued, on a thread of its own.
pub struct Exporter {
    processor: Option<BatchSpanProcessor>,
    /// Spans handed over and not yet taken into an export request.
    queued: Arc<AtomicUsize>,
    dropped: IntCounter,
    endpoint: String,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Exporter {
    /// An exporter that posts to `endpoint` (`http://host:port/v1/traces`), counting dropped
    /// spans in `dropped`.
    pub fn new(endpoint: &str, dropped: IntCounter) -> Result<Exporter, ExportError> {
        let otlp = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|source| ExportError {
                endpoint: endpoint.to_string(),
                source,
            })?;
        let queued = Arc::new(AtomicUsize::new(0));
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .with_scheduled_delay(Duration::from_secs(1))
            .build();
        let mut processor = BatchSpanProcessor::builder(Counted {
            inner: otlp,
            queued: queued.clone(),
            dropped: dropped.clone(),
            warned: AtomicBool::new(false),
        })
        .with_batch_config(config)
        .build();
        processor.set_resource(
            &Resource::builder_empty()
                .with_attributes([
                    KeyValue::new("service.name", "switchyard"),
                    KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                ])
                .build(),
        );
        Ok(Exporter {
            processor: Some(processor),
            queued,
            dropped,
            endpoint: endpoint.to_string(),
        })
    }

    /// The endpoint spans go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Queue `span` for export, or drop (and count) it when the queue is full. Never blocks.
    pub fn export(&self, span: SpanData) {
        let Some(p) = &self.processor else { return };
        if self.queued.fetch_add(1, Ordering::AcqRel) >= QUEUE {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.inc();
            return;
        }
        p.on_end(span);
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // Shutting down waits for the last export: never on the thread that dropped it (a
        // request or the reload may hold the last reference).
        if let Some(p) = self.processor.take() {
            let spawned = std::thread::Builder::new()
                .name("otlp-shutdown".into())
                .spawn(move || {
                    let _ = p.shutdown_with_timeout(EXPORT_TIMEOUT);
                });
            if let Err(e) = spawned {
                log::warn!("OTLP exporter: no thread to flush on ({e}); queued spans are lost");
            }
        }
    }
}

/// The OTLP exporter, counting the spans that leave the queue and those it failed to send.
#[derive(Debug)]
struct Counted {
    inner: opentelemetry_otlp::SpanExporter,
    queued: Arc<AtomicUsize>,
    dropped: IntCounter,
    /// A failed export was logged as a warning (later ones only at debug level).
    warned: AtomicBool,
}

impl SpanExporter for Counted {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            self.dropped.inc_by(n as u64);
            if self.warned.swap(true, Ordering::Relaxed) {
                log::debug!("OTLP export of {n} spans failed: {e}");
            } else {
                log::warn!("OTLP export of {n} spans failed: {e} (further failures are counted in switchyard_trace_spans_dropped_total)");
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter in use, kept across snapshots while its endpoint stays the same (so a reload
/// neither loses queued spans nor opens a new connection).
#[derive(Default)]
pub struct Exporters {
    current: std::sync::Mutex<Option<Arc<Exporter>>>,
}

impl Exporters {
    /// The exporter to `endpoint` (`None`: no export), made when there is none to it yet. A
    /// failure to make one is logged and exports nothing; requests are unaffected.
    pub fn get(&self, endpoint: Option<&str>, dropped: &IntCounter) -> Option<Arc<Exporter>> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let Some(endpoint) = endpoint else {
            *current = None;
            return None;
        };
        if let Some(e) = current.as_ref().filter(|e| e.endpoint() == endpoint) {
            return Some(e.clone());
        }
        *current = match Exporter::new(endpoint, dropped.clone()) {
            Ok(e) => {
                log::info!("exporting trace spans to {endpoint} (OTLP/HTTP)");
                Some(Arc::new(e))
            }
            Err(e) => {
                log::error!("{e}; no spans are exported");
                None
            }
        };
        current.clone()
    }
}
