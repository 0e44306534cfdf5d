//! Logs and OpenTelemetry export for the Roomcast binaries (gateway and
//! operator): one place that builds the `tracing` subscriber (text or JSON
//! logs on stderr, filtered by the log level) and, only when `OTEL_*`
//! variables ask for it, the OTLP/HTTP span and metric exporters.
//!
//! Without any `OTEL_*` variable no exporter, provider or extra layer is
//! built: logging is all that runs.

pub mod export;
pub mod exposition;
mod http_client;

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use export::{EnvError, Export, Sampler};

use crate::http_client::RuntimeClient;

/// How long one OTLP request may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is neither text nor json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Who decides which traces are sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// The SDK, with the `OTEL_TRACES_SAMPLER` sampler (the operator).
    Sdk,
    /// The caller, before it starts any span: the SDK records every span it
    /// is given (the gateway decides once per publish, see its `trace.rs`).
    Caller,
}

/// What [`init`] sets up.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    /// `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` set one;
    /// also the instrumentation scope of spans and metrics.
    pub service: &'static str,
    /// The log filter (`info`, `roomcast_gateway=debug`, …).
    pub log_level: &'a str,
    /// Text or JSON log lines.
    pub log_format: LogFormat,
    /// Who takes sampling decisions.
    pub sampling: Sampling,
}

/// A setting that keeps the binary from starting; the message names it.
#[derive(Debug)]
pub enum InitError {
    /// `log_level` is not a valid filter.
    LogLevel(String, String),
    /// An `OTEL_*` variable has a value this build cannot honour.
    Env(EnvError),
    /// An exporter could not be built.
    Exporter(String),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::LogLevel(level, e) => {
                write!(f, "invalid configuration: log_level {level:?}: {e}")
            }
            InitError::Env(e) => e.fmt(f),
            InitError::Exporter(e) => write!(f, "cannot set up OTLP export: {e}"),
        }
    }
}

impl std::error::Error for InitError {}

/// What [`init`] built; keep it for the life of the process and call
/// [`Telemetry::shutdown`] last, so the final spans and metrics are sent.
#[derive(Debug)]
pub struct Telemetry {
    export: Option<Export>,
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    tracer: Option<SdkTracer>,
    service: &'static str,
}

impl Telemetry {
    /// What is exported, `None` when export is off.
    pub fn export(&self) -> Option<&Export> {
        self.export.as_ref()
    }

    /// The tracer for spans started directly (not through `tracing`), when traces are exported.
    pub fn tracer(&self) -> Option<&SdkTracer> {
        self.tracer.as_ref()
    }

    /// The meter to register instruments on, when metrics are exported.
    pub fn meter(&self) -> Option<Meter> {
        self.meter_provider
            .as_ref()
            .map(|p| opentelemetry::metrics::MeterProvider::meter(p, self.service))
    }

    /// Sends what is still buffered and stops the exporters (at most a few
    /// seconds). Runs the blocking flush off the async workers, which the
    /// exporters need to make their requests.
    pub async fn shutdown(self) {
        let Telemetry {
            tracer_provider,
            meter_provider,
            ..
        } = self;
        if tracer_provider.is_none() && meter_provider.is_none() {
            return;
        }
        let flush = tokio::task::spawn_blocking(move || {
            if let Some(p) = tracer_provider
                && let Err(e) = p.shutdown_with_timeout(Duration::from_secs(5))
            {
                eprintln!("OTLP span export did not finish: {e}");
            }
            if let Some(p) = meter_provider
                && let Err(e) = p.shutdown_with_timeout(Duration::from_secs(5))
            {
                eprintln!("OTLP metric export did not finish: {e}");
            }
        });
        let _ = flush.await;
    }
}

/// Installs the global `tracing` subscriber and, when the `OTEL_*`
/// variables ask for it, the OTLP exporters. Call once, from within the
/// Tokio runtime (the exporters post through it).
pub fn init(options: &Options<'_>) -> Result<Telemetry, InitError> {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("OTEL_"))
        .collect();
    let export = export::decide(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(InitError::Env)?;
    let filter = EnvFilter::try_new(options.log_level)
        .map_err(|e| InitError::LogLevel(options.log_level.to_owned(), e.to_string()))?;

    let mut telemetry = Telemetry {
        export,
        tracer_provider: None,
        meter_provider: None,
        tracer: None,
        service: options.service,
    };
    if let Some(export) = export {
        let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let mut resource = Resource::builder();
        if export::needs_service_name(get("OTEL_SERVICE_NAME"), get("OTEL_RESOURCE_ATTRIBUTES")) {
            resource = resource.with_service_name(options.service);
        }
        let resource = resource
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let client = RuntimeClient::new(tokio::runtime::Handle::current(), EXPORT_TIMEOUT);
        if export.traces {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_http_client(client.clone())
                .build()
                .map_err(|e| InitError::Exporter(e.to_string()))?;
            let sampler = match options.sampling {
                Sampling::Sdk => export.sampler.to_sdk(),
                // The caller only starts spans it decided to sample; a
                // remote parent only reaches it when sampled upstream.
                Sampling::Caller => opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                    opentelemetry_sdk::trace::Sampler::AlwaysOn,
                )),
            };
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(sampler)
                .with_resource(resource.clone())
                .build();
            telemetry.tracer = Some(provider.tracer(options.service));
            telemetry.tracer_provider = Some(provider);
        }
        if export.metrics {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_http_client(client)
                .build()
                .map_err(|e| InitError::Exporter(e.to_string()))?;
            let provider = SdkMeterProvider::builder()
                .with_periodic_exporter(exporter)
                .with_resource(resource)
                .build();
            telemetry.meter_provider = Some(provider);
        }
    }

    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match options.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => logs.json().boxed(),
    };
    // Spans and their events of our own crates go to OTLP whatever the log
    // level, so `log_level=warn` does not silence traces.
    let spans = telemetry.tracer.clone().map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter_fn(|meta| meta.target().starts_with("roomcast")))
    });
    // A second init (tests calling it twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .try_init();
    match export {
        None => tracing::info!("OpenTelemetry export off (no OTEL_* variable set)"),
        Some(e) => tracing::info!(
            traces = e.traces,
            metrics = e.metrics,
            sampler = ?e.sampler,
            "OpenTelemetry export on (OTLP/HTTP)"
        ),
    }
    Ok(telemetry)
}
