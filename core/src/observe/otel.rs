//! The `tracing` spans of runs, maps, nodes and the cache (see
//! [`trace`](super::trace)) exported over OTLP/gRPC to an OpenTelemetry
//! collector (feature `otel`).
//!
//! ```no_run
//! # fn main() -> Result<(), hypernodes_core::Error> {
//! let telemetry = hypernodes_core::observe::otel::init("http://127.0.0.1:4317", "my-pipeline")?;
//! // ... runs and maps: their spans go to the collector ...
//! telemetry.shutdown()?; // sends what is still buffered
//! # Ok(()) }
//! ```
//!
//! [`init`] installs a process-wide `tracing` subscriber whose only layer
//! exports spans; to combine the export with other layers (a log format,
//! a filter), build your own subscriber with [`layer`] instead. Spans are
//! sent in batches from a background thread; the exporter's gRPC client
//! runs on a small Tokio runtime of its own, so no runtime is needed
//! around the calls.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;

use crate::error::Error;

/// Keeps the export running; [`Telemetry::shutdown`] (or dropping it)
/// sends what is still buffered and stops it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The `tracing-subscriber` layer that exports spans (see [`layer`]).
pub type OtelLayer<S> = tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>;

fn telemetry_error(what: &str, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Telemetry {
        what: what.to_string(),
        source: Box::new(source),
    }
}

/// A layer exporting spans to the OTLP/gRPC collector at `endpoint`
/// (`http://host:4317`) under the service name `service`, and the
/// [`Telemetry`] that keeps it running.
pub fn layer<S>(endpoint: &str, service: &str) -> Result<(OtelLayer<S>, Telemetry), Error>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("hypernodes-otel")
        .enable_all()
        .build()
        .map_err(|e| telemetry_error("a runtime for the OTLP exporter", e))?;
    // The gRPC channel is made inside the runtime, whose worker then
    // drives it for the batch exporter's thread.
    let exporter = runtime
        .block_on(async {
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
        })
        .map_err(|e| telemetry_error("the OTLP span exporter", e))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build();
    let tracer = provider.tracer("hypernodes");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((
        layer,
        Telemetry {
            provider: Some(provider),
            runtime: Some(runtime),
        },
    ))
}

/// Exports every span of this process to the OTLP/gRPC collector at
/// `endpoint` (`http://host:4317`) under the service name `service`, by
/// installing a process-wide `tracing` subscriber (an error if one is
/// installed already).
pub fn init(endpoint: &str, service: &str) -> Result<Telemetry, Error> {
    let (layer, telemetry) = layer(endpoint, service)?;
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| telemetry_error("a process-wide tracing subscriber", e))?;
    Ok(telemetry)
}

impl Telemetry {
    /// Sends every span ended so far now (the exporter otherwise sends in
    /// batches, every few seconds).
    pub fn flush(&self) -> Result<(), Error> {
        match &self.provider {
            Some(p) => p
                .force_flush()
                .map_err(|e| telemetry_error("flushing spans", e)),
            None => Ok(()),
        }
    }

    /// Sends what is still buffered and stops the export.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), Error> {
        let result = match self.provider.take() {
            Some(p) => p
                .shutdown()
                .map_err(|e| telemetry_error("stopping the span export", e)),
            None => Ok(()),
        };
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        result
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Best effort: a collector gone away must not fail the program.
        let _ = self.stop();
    }
}
