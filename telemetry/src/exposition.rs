//! Metrics written once: a binary describes each metric family (name, help, kind and how to
//! read its samples from the binary's own atomics) in one table, and this module renders
//! the table as Prometheus text for `/metrics` and registers it as observable OpenTelemetry
//! instruments for OTLP. Both read the same values: nothing is counted twice.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

/// `Content-Type` of the text exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Label pairs of one sample: (name, value), in exposition order.
pub type Labels<'a> = [(&'static str, &'a str)];

/// Where the samples of one family go.
type Emit<'a> = dyn FnMut(&Labels<'_>, i64) + 'a;

/// Receives the samples of one family.
pub struct Samples<'a> {
    emit: &'a mut Emit<'a>,
}

impl Samples<'_> {
    /// One sample with labels (name, value), in exposition order.
    pub fn labelled(&mut self, labels: &Labels<'_>, value: i64) {
        (self.emit)(labels, value);
    }
}

/// How a scalar family is read.
pub enum Read<T> {
    /// One unlabelled sample.
    Value(fn(&T) -> i64),
    /// Any number of labelled samples.
    Samples(fn(&T, &mut Samples<'_>)),
}

/// What a family measures.
pub enum Metric<T> {
    /// Only grows. Its Prometheus name ends in `_total`; the OTLP name drops that suffix.
    Counter(Read<T>),
    /// Goes up and down.
    Gauge(Read<T>),
    /// Durations in fixed buckets (seconds).
    Histogram(fn(&T) -> &Histogram),
}

/// One metric family of a binary.
pub struct Family<T> {
    /// Prometheus name.
    pub name: &'static str,
    /// Help text (also the OTLP description).
    pub help: &'static str,
    /// Kind and reader.
    pub metric: Metric<T>,
}

impl<T> Family<T> {
    /// An unlabelled counter.
    pub const fn counter(name: &'static str, help: &'static str, read: fn(&T) -> i64) -> Self {
        Self {
            name,
            help,
            metric: Metric::Counter(Read::Value(read)),
        }
    }

    /// A labelled counter.
    pub const fn labelled_counter(
        name: &'static str,
        help: &'static str,
        read: fn(&T, &mut Samples<'_>),
    ) -> Self {
        Self {
            name,
            help,
            metric: Metric::Counter(Read::Samples(read)),
        }
    }

    /// An unlabelled gauge.
    pub const fn gauge(name: &'static str, help: &'static str, read: fn(&T) -> i64) -> Self {
        Self {
            name,
            help,
            metric: Metric::Gauge(Read::Value(read)),
        }
    }

    /// A labelled gauge.
    pub const fn labelled_gauge(
        name: &'static str,
        help: &'static str,
        read: fn(&T, &mut Samples<'_>),
    ) -> Self {
        Self {
            name,
            help,
            metric: Metric::Gauge(Read::Samples(read)),
        }
    }

    /// A duration histogram.
    pub const fn histogram(
        name: &'static str,
        help: &'static str,
        read: fn(&T) -> &Histogram,
    ) -> Self {
        Self {
            name,
            help,
            metric: Metric::Histogram(read),
        }
    }
}

/// A counter's value as a sample (saturating: an exposition never wraps negative).
pub fn count(v: &AtomicU64) -> i64 {
    i64::try_from(v.load(Relaxed)).unwrap_or(i64::MAX)
}

fn read<T>(read: &Read<T>, source: &T, emit: &mut Emit<'_>) {
    match read {
        Read::Value(f) => emit(&[], f(source)),
        Read::Samples(f) => f(source, &mut Samples { emit }),
    }
}

/// The Prometheus text exposition of `families`, read from `source`, in table order.
pub fn render<T>(families: &[Family<T>], source: &T) -> String {
    let mut out = String::with_capacity(4096);
    for family in families {
        let name = family.name;
        let kind = match family.metric {
            Metric::Counter(_) => "counter",
            Metric::Gauge(_) => "gauge",
            Metric::Histogram(_) => "histogram",
        };
        let _ = write!(out, "# HELP {name} {}\n# TYPE {name} {kind}\n", family.help);
        match &family.metric {
            Metric::Counter(r) | Metric::Gauge(r) => read(r, source, &mut |labels, value| {
                out.push_str(name);
                write_labels(&mut out, labels);
                let _ = writeln!(out, " {value}");
            }),
            Metric::Histogram(h) => h(source).render(&mut out, name),
        }
    }
    out
}

fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{name}=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn key_values(labels: &Labels<'_>) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| KeyValue::new(*k, (*v).to_owned()))
        .collect()
}

/// Registers every family as an OpenTelemetry instrument on `meter`: counters and gauges
/// as observable instruments reading `source` at each export, histograms as recorders
/// fed by [`Histogram::observe`] from now on.
pub fn export_otlp<T: Send + Sync + 'static>(
    families: &'static [Family<T>],
    source: &Arc<T>,
    meter: &Meter,
) {
    for family in families {
        match &family.metric {
            Metric::Counter(r) => {
                let source = source.clone();
                meter
                    .u64_observable_counter(family.name.trim_end_matches("_total"))
                    .with_description(family.help)
                    .with_callback(move |o| {
                        read(r, &source, &mut |labels, v| {
                            o.observe(u64::try_from(v).unwrap_or(0), &key_values(labels));
                        });
                    })
                    .build();
            }
            Metric::Gauge(r) => {
                let source = source.clone();
                meter
                    .i64_observable_gauge(family.name)
                    .with_description(family.help)
                    .with_callback(move |o| {
                        read(r, &source, &mut |labels, v| {
                            o.observe(v, &key_values(labels))
                        });
                    })
                    .build();
            }
            Metric::Histogram(h) => {
                let histogram = h(source);
                let recorder = meter
                    .f64_histogram(family.name)
                    .with_unit("s")
                    .with_description(family.help)
                    .with_boundaries(histogram.bounds.iter().map(|&n| n as f64 / 1e9).collect())
                    .build();
                let _ = histogram.otlp.set(recorder);
            }
        }
    }
}

/// A fixed-bucket duration histogram: one atomic add per bucket hit and one for the sum,
/// no lock and no allocation per observation.
#[derive(Debug)]
pub struct Histogram {
    /// Inclusive upper bounds in nanoseconds: integers, so observing never touches floats.
    bounds: &'static [u64],
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
    /// The OTLP copy, once OTLP metrics are on.
    otlp: OnceLock<opentelemetry::metrics::Histogram<f64>>,
}

impl Histogram {
    /// A histogram with these inclusive upper bounds (nanoseconds, ascending).
    pub fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            otlp: OnceLock::new(),
        }
    }

    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if let Some(bucket) = self.buckets.get(self.bucket_of(nanos)) {
            bucket.fetch_add(1, Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Relaxed);
        if let Some(h) = self.otlp.get() {
            h.record(elapsed.as_secs_f64(), &[]);
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// The bucket an observation of `nanos` falls in (bounds are inclusive).
    pub fn bucket_of(&self, nanos: u64) -> usize {
        self.bounds
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(self.bounds.len())
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            match self.bounds.get(i) {
                Some(&bound) => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{le=\"{}\"}} {cumulative}",
                        bound as f64 / 1e9
                    );
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = write!(out, "{name}_sum {sum}\n{name}_count {cumulative}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Source {
        hits: AtomicU64,
        depth: Mutex<Vec<(String, i64)>>,
        latency: OnceLock<Histogram>,
    }

    const BOUNDS: [u64; 2] = [1_000, 1_000_000];

    const FAMILIES: &[Family<Source>] = &[
        Family::counter("demo_hits_total", "Hits.", |s| count(&s.hits)),
        Family::labelled_gauge("demo_depth", "Depth per queue.", |s, out| {
            if let Ok(depth) = s.depth.lock() {
                for (queue, v) in depth.iter() {
                    out.labelled(&[("queue", queue), ("kind", "a")], *v);
                }
            }
        }),
        Family::histogram("demo_seconds", "Latency.", |s| {
            s.latency.get_or_init(|| Histogram::new(&BOUNDS))
        }),
    ];

    #[test]
    fn renders_help_type_samples_and_escaped_labels() {
        let s = Source::default();
        s.hits.store(7, Relaxed);
        s.depth.lock().unwrap().push(("q\"1\\\n".into(), -3));
        let text = render(FAMILIES, &s);
        assert!(
            text.starts_with(
                "# HELP demo_hits_total Hits.\n# TYPE demo_hits_total counter\ndemo_hits_total 7\n\
             # HELP demo_depth Depth per queue.\n# TYPE demo_depth gauge\n\
             demo_depth{queue=\"q\\\"1\\\\\\n\",kind=\"a\"} -3\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn histogram_renders_cumulative_inclusive_buckets_sum_and_count() {
        let s = Source::default();
        let h = FAMILIES[2..]
            .iter()
            .find_map(|f| match f.metric {
                Metric::Histogram(h) => Some(h(&s)),
                _ => None,
            })
            .unwrap();
        assert_eq!((h.bucket_of(1_000), h.bucket_of(1_001)), (0, 1));
        assert_eq!(h.bucket_of(u64::MAX), 2);
        h.observe(Duration::from_nanos(1_000));
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_secs(2));
        assert_eq!(h.count(), 3);
        let text = render(FAMILIES, &s);
        for line in [
            "# TYPE demo_seconds histogram",
            "demo_seconds_bucket{le=\"0.000001\"} 1",
            "demo_seconds_bucket{le=\"0.001\"} 2",
            "demo_seconds_bucket{le=\"+Inf\"} 3",
            "demo_seconds_sum 2.000501",
            "demo_seconds_count 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn otlp_export_reads_the_same_table_and_values() {
        use opentelemetry::metrics::MeterProvider as _;
        use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
        use opentelemetry_sdk::metrics::{
            InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
        };

        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let s = Arc::new(Source::default());
        export_otlp(FAMILIES, &s, &provider.meter("test"));
        s.hits.store(7, Relaxed);
        s.depth.lock().unwrap().push(("q1".into(), -3));
        let h = s.latency.get().expect("registered by export_otlp");
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_secs(2));
        provider.force_flush().unwrap();

        let exported = exporter.get_finished_metrics().unwrap();
        let metrics: Vec<_> = exported
            .iter()
            .flat_map(|rm| rm.scope_metrics())
            .flat_map(|sm| sm.metrics())
            .collect();
        let find = |name: &str| {
            metrics
                .iter()
                .find(|m| m.name() == name)
                .unwrap_or_else(|| panic!("{name} not exported"))
        };
        // A counter loses its `_total` suffix over OTLP and keeps its help as description.
        let hits = find("demo_hits");
        assert_eq!(hits.description(), "Hits.");
        let AggregatedMetrics::U64(MetricData::Sum(sum)) = hits.data() else {
            panic!("demo_hits is not a u64 sum: {:?}", hits.data());
        };
        assert!(sum.is_monotonic());
        assert_eq!(
            sum.data_points().map(|p| p.value()).collect::<Vec<_>>(),
            [7]
        );

        let AggregatedMetrics::I64(MetricData::Gauge(depth)) = find("demo_depth").data() else {
            panic!("demo_depth is not an i64 gauge");
        };
        let point = depth.data_points().next().expect("one depth sample");
        assert_eq!(point.value(), -3);
        let mut labels: Vec<_> = point
            .attributes()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        labels.sort();
        assert_eq!(
            labels,
            [("kind".into(), "a".into()), ("queue".into(), "q1".into())]
        );

        let latency = find("demo_seconds");
        assert_eq!(latency.unit(), "s");
        let AggregatedMetrics::F64(MetricData::Histogram(hist)) = latency.data() else {
            panic!("demo_seconds is not an f64 histogram");
        };
        let point = hist.data_points().next().expect("one histogram point");
        assert_eq!(point.count(), 2);
        assert_eq!(point.bounds().collect::<Vec<_>>(), [0.000001, 0.001]);
        assert_eq!(point.bucket_counts().collect::<Vec<_>>(), [0, 1, 1]);
    }
}
