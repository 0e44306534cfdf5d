//! Whether OpenTelemetry export is on, and with which sampler, decided from
//! the process's `OTEL_*` variables. Pure: the variables come in as a list,
//! so every rule is unit-tested without touching the environment.
//!
//! The OpenTelemetry SDK reads most standard variables itself (endpoints,
//! headers, timeouts, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`). This module owns the ones the
//! SDK does not act on, or acts on silently: nothing is exported unless some
//! `OTEL_*` variable is set, `OTEL_SDK_DISABLED`, the exporter selection
//! (`OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`), the protocol (only
//! `http/protobuf` is built in) and the sampler, which the SDK would ignore
//! when misspelled.

use std::fmt;

/// A standard variable with a value this build cannot honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    /// The variable, e.g. `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// What is accepted instead.
    pub expected: &'static str,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration: {}={:?}: {}",
            self.variable, self.value, self.expected
        )
    }
}

impl std::error::Error for EnvError {}

/// The sampler's decision for a trace that has no parent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    /// Every trace.
    AlwaysOn,
    /// No trace.
    AlwaysOff,
    /// This fraction of traces (0.0 to 1.0), chosen by trace id.
    Ratio(f64),
}

/// `OTEL_TRACES_SAMPLER` (+ `_ARG`), as the OpenTelemetry specification defines them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// What decides a trace without a parent.
    pub root: Root,
    /// Whether a span with a parent follows the parent's sampled flag
    /// (the `parentbased_*` samplers) instead of deciding by `root`.
    pub parent_based: bool,
}

impl Default for Sampler {
    /// `parentbased_always_on`, the specification's default.
    fn default() -> Self {
        Sampler {
            root: Root::AlwaysOn,
            parent_based: true,
        }
    }
}

impl Sampler {
    /// Parses `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    pub fn parse(name: Option<&str>, arg: Option<&str>) -> Result<Sampler, EnvError> {
        let ratio = || -> Result<f64, EnvError> {
            let Some(arg) = arg.map(str::trim).filter(|a| !a.is_empty()) else {
                return Ok(1.0);
            };
            match arg.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(EnvError {
                    variable: "OTEL_TRACES_SAMPLER_ARG",
                    value: arg.to_owned(),
                    expected: "a sampling ratio from 0 to 1, e.g. 0.01",
                }),
            }
        };
        let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
            return Ok(Sampler::default());
        };
        let (root, parent_based) = match name {
            "always_on" => (Root::AlwaysOn, false),
            "always_off" => (Root::AlwaysOff, false),
            "traceidratio" => (Root::Ratio(ratio()?), false),
            "parentbased_always_on" => (Root::AlwaysOn, true),
            "parentbased_always_off" => (Root::AlwaysOff, true),
            "parentbased_traceidratio" => (Root::Ratio(ratio()?), true),
            _ => {
                return Err(EnvError {
                    variable: "OTEL_TRACES_SAMPLER",
                    value: name.to_owned(),
                    expected: "one of always_on, always_off, traceidratio, parentbased_always_on, \
                               parentbased_always_off, parentbased_traceidratio",
                });
            }
        };
        Ok(Sampler { root, parent_based })
    }

    /// Whether a trace without a parent and with this trace id is sampled.
    /// The same rule as the SDK's `TraceIdRatioBased`, so a decision taken
    /// here before any span exists is the one the SDK takes for the span.
    pub fn samples_root(&self, trace_id: u128) -> bool {
        match self.root {
            Root::AlwaysOn => true,
            Root::AlwaysOff => false,
            Root::Ratio(ratio) if ratio >= 1.0 => true,
            Root::Ratio(ratio) => {
                let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
                // The low 64 bits of the id (its last 8 bytes), halved.
                ((trace_id as u64) >> 1) < bound
            }
        }
    }

    /// Whether a span whose (remote) parent has `parent_sampled` is sampled.
    pub fn samples_child(&self, trace_id: u128, parent_sampled: bool) -> bool {
        if self.parent_based {
            parent_sampled
        } else {
            self.samples_root(trace_id)
        }
    }

    /// The same sampler for the SDK.
    pub fn to_sdk(&self) -> opentelemetry_sdk::trace::Sampler {
        use opentelemetry_sdk::trace::Sampler as Sdk;
        let root = match self.root {
            Root::AlwaysOn => Sdk::AlwaysOn,
            Root::AlwaysOff => Sdk::AlwaysOff,
            Root::Ratio(r) => Sdk::TraceIdRatioBased(r),
        };
        if self.parent_based {
            Sdk::ParentBased(Box::new(root))
        } else {
            root
        }
    }
}

/// Which signals go out over OTLP.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Export {
    /// Spans (`OTEL_TRACES_EXPORTER` is not `none`).
    pub traces: bool,
    /// Metrics (`OTEL_METRICS_EXPORTER` is not `none`).
    pub metrics: bool,
    /// The trace sampler.
    pub sampler: Sampler,
}

/// What the `OTEL_*` variables ask for: `None` when nothing is exported
/// (no `OTEL_*` variable at all, `OTEL_SDK_DISABLED=true`, or every
/// exporter `none`).
pub fn decide<'a, I>(vars: I) -> Result<Option<Export>, EnvError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let vars: Vec<(&str, &str)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("OTEL_"))
        .collect();
    if vars.is_empty() {
        return Ok(None);
    }
    let get = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    for variable in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    ] {
        if let Some(value) = get(variable)
            && value.trim() != "http/protobuf"
        {
            return Err(EnvError {
                variable,
                value: value.to_owned(),
                expected: "only http/protobuf is supported (OTLP over HTTP, collector port 4318); \
                           grpc and http/json are not built in",
            });
        }
    }
    for variable in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    ] {
        if let Some(value) = get(variable)
            && !value.trim().starts_with("http://")
        {
            return Err(EnvError {
                variable,
                value: value.to_owned(),
                expected: "an http:// URL of an OpenTelemetry collector (no TLS is built in: \
                           use a node-local or sidecar collector)",
            });
        }
    }
    let exporter = |variable: &'static str| -> Result<bool, EnvError> {
        match get(variable).map(str::trim) {
            None | Some("") | Some("otlp") => Ok(true),
            Some("none") => Ok(false),
            Some(other) => Err(EnvError {
                variable,
                value: other.to_owned(),
                expected: "otlp or none",
            }),
        }
    };
    let traces = exporter("OTEL_TRACES_EXPORTER")?;
    let metrics = exporter("OTEL_METRICS_EXPORTER")?;
    let sampler = Sampler::parse(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"))?;
    if !traces && !metrics {
        return Ok(None);
    }
    Ok(Some(Export {
        traces,
        metrics,
        sampler,
    }))
}

/// Whether the resource still needs the binary's own `service.name`: neither
/// `OTEL_SERVICE_NAME` nor a `service.name` in `OTEL_RESOURCE_ATTRIBUTES` names one.
pub fn needs_service_name(service_name: Option<&str>, resource_attributes: Option<&str>) -> bool {
    let named = service_name.is_some_and(|s| !s.trim().is_empty());
    let in_attributes = resource_attributes.is_some_and(|attrs| {
        attrs.split(',').any(|kv| {
            kv.split_once('=')
                .is_some_and(|(k, _)| k.trim() == "service.name")
        })
    });
    !named && !in_attributes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_exported_without_otel_variables() {
        assert_eq!(decide([("PATH", "/bin"), ("HOME", "/root")]), Ok(None));
        assert_eq!(decide([]), Ok(None));
    }

    #[test]
    fn any_otel_variable_turns_export_on_with_the_spec_default_sampler() {
        let export = decide([("OTEL_SERVICE_NAME", "edge")]).unwrap().unwrap();
        assert!(export.traces && export.metrics);
        assert_eq!(export.sampler, Sampler::default());
        assert!(export.sampler.parent_based);
        assert_eq!(export.sampler.root, Root::AlwaysOn);
    }

    #[test]
    fn sdk_disabled_and_none_exporters_turn_export_off() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(decide([base, ("OTEL_SDK_DISABLED", "TRUE")]), Ok(None));
        assert!(
            decide([base, ("OTEL_SDK_DISABLED", "false")])
                .unwrap()
                .is_some()
        );
        assert_eq!(
            decide([
                base,
                ("OTEL_TRACES_EXPORTER", "none"),
                ("OTEL_METRICS_EXPORTER", "none")
            ]),
            Ok(None)
        );
        let only_metrics = decide([base, ("OTEL_TRACES_EXPORTER", "none")])
            .unwrap()
            .unwrap();
        assert!(!only_metrics.traces && only_metrics.metrics);
    }

    #[test]
    fn unsupported_protocols_name_their_variable() {
        let e = decide([("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert_eq!(e.variable, "OTEL_EXPORTER_OTLP_PROTOCOL");
        assert!(
            e.to_string()
                .contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"grpc\"")
        );
        let e = decide([("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")]).unwrap_err();
        assert_eq!(e.variable, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
        assert!(decide([("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).is_ok());
    }

    #[test]
    fn endpoints_must_be_plain_http() {
        let e = decide([("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "https://x:4318")]).unwrap_err();
        assert_eq!(e.variable, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
        assert!(decide([("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]).is_ok());
    }

    #[test]
    fn exporter_names_are_checked() {
        let e = decide([("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert_eq!(e.variable, "OTEL_TRACES_EXPORTER");
    }

    #[test]
    fn samplers_parse_per_spec() {
        let s = Sampler::parse(Some("parentbased_traceidratio"), Some("0.25")).unwrap();
        assert_eq!(
            s,
            Sampler {
                root: Root::Ratio(0.25),
                parent_based: true
            }
        );
        assert_eq!(
            Sampler::parse(Some("traceidratio"), None).unwrap().root,
            Root::Ratio(1.0),
            "a missing ratio is 1.0"
        );
        assert!(
            !Sampler::parse(Some("always_off"), None)
                .unwrap()
                .parent_based
        );
        assert_eq!(
            Sampler::parse(Some("traceidratio"), Some("1.5"))
                .unwrap_err()
                .variable,
            "OTEL_TRACES_SAMPLER_ARG"
        );
        assert_eq!(
            Sampler::parse(Some("jaeger_remote"), None)
                .unwrap_err()
                .variable,
            "OTEL_TRACES_SAMPLER"
        );
    }

    #[test]
    fn parent_based_samplers_follow_the_parent() {
        let ratio0 = Sampler::parse(Some("parentbased_traceidratio"), Some("0")).unwrap();
        assert!(ratio0.samples_child(7, true));
        assert!(!ratio0.samples_child(7, false));
        assert!(!ratio0.samples_root(u128::MAX));
        let off = Sampler::parse(Some("always_off"), None).unwrap();
        assert!(
            !off.samples_child(7, true),
            "not parent-based: its own rule"
        );
    }

    #[test]
    fn ratio_decisions_agree_with_the_sdk() {
        use opentelemetry::trace::{SpanKind, TraceId};
        use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample};
        let sampler = Sampler::parse(Some("traceidratio"), Some("0.3")).unwrap();
        let sdk = sampler.to_sdk();
        let mut sampled = 0;
        // A fixed spread of ids (a multiplicative hash), so the test is deterministic.
        for i in 0u128..2000 {
            let id = i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) | 1;
            let ours = sampler.samples_root(id);
            let theirs = sdk.should_sample(
                None,
                TraceId::from(id),
                "receive",
                &SpanKind::Server,
                &[],
                &[],
            );
            assert_eq!(
                ours,
                theirs.decision == SamplingDecision::RecordAndSample,
                "id {id:032x}"
            );
            sampled += usize::from(ours);
        }
        assert!((400..800).contains(&sampled), "about 30%: {sampled}");
    }

    #[test]
    fn service_name_defaults_only_when_unnamed() {
        assert!(needs_service_name(None, None));
        assert!(needs_service_name(Some(" "), Some("team=rt")));
        assert!(!needs_service_name(Some("edge"), None));
        assert!(!needs_service_name(
            None,
            Some("team=rt, service.name=edge")
        ));
    }
}
