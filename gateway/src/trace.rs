//! Publish traces: one trace per sampled publish, following the message from
//! the gateway that received it across NATS to every gateway that delivers it.
//!
//! Spans: `receive` (the publish arriving on a session or the HTTP API, the
//! root), `fanout` (local delivery) and `bus publish` (the NATS publish) on
//! the receiving gateway; `bus receive` and its `fanout` on each delivering
//! gateway, joined to the first by a W3C `traceparent` NATS header that
//! carries the `bus publish` span.
//!
//! The hot path pays nothing for this unless a publish is traced: with export
//! off, [`start_publish`] is one atomic load; an unsampled publish adds one
//! random number; a bus message without headers is delivered untouched. Only
//! a sampled publish creates spans and a header map. The sampling decision
//! is taken here, once per publish, from `OTEL_TRACES_SAMPLER(_ARG)`.

use std::sync::OnceLock;

use opentelemetry::trace::Span as _;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use roomcast_telemetry::Sampler;

/// The NATS header carrying the trace context.
pub const TRACEPARENT: &str = "traceparent";

struct Tracing {
    tracer: SdkTracer,
    sampler: Sampler,
    node: String,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// Turns publish tracing on for this process (once; later calls are ignored).
pub fn install(tracer: SdkTracer, sampler: Sampler, node: &str) {
    let _ = TRACING.set(Tracing {
        tracer,
        sampler,
        node: node.to_owned(),
    });
}

/// A W3C trace context (`traceparent` header), version 00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    /// 128-bit trace id, never 0.
    pub trace_id: u128,
    /// 64-bit id of the parent span, never 0.
    pub span_id: u64,
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl Traceparent {
    /// Whether the sender sampled the trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The header value: `00-<trace id>-<span id>-<flags>`.
    pub fn format(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }

    /// Parses a header value; `None` for anything the W3C rules reject
    /// (version ff, all-zero ids, uppercase or missing hex digits, a version
    /// 00 value with trailing data).
    pub fn parse(value: &str) -> Option<Traceparent> {
        let value = value.trim();
        let mut parts = value.splitn(5, '-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next();
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(version, 2) || version == "ff" || (version == "00" && rest.is_some()) {
            return None;
        }
        if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Traceparent {
            trace_id,
            span_id,
            flags,
        })
    }
}

/// The trace of one sampled publish on the gateway that received it: its
/// `receive` span, ended when this is dropped.
#[derive(Debug)]
pub struct Publish {
    cx: Context,
}

/// Decides whether a publish to `room` arriving `via` (`websocket` or
/// `http`) is traced, and if so starts its `receive` span.
pub fn start_publish(room: &str, via: &'static str) -> Option<Publish> {
    let t = TRACING.get()?;
    if !t.sampler.samples_root(rand::random()) {
        return None;
    }
    let span = t
        .tracer
        .span_builder("receive")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("roomcast.room", room.to_owned()),
            KeyValue::new("roomcast.via", via),
            KeyValue::new("roomcast.node", t.node.clone()),
        ])
        .start_with_context(&t.tracer, &Context::new());
    Some(Publish {
        cx: Context::new().with_span(span),
    })
}

impl Publish {
    /// Starts the `bus publish` span for `subject`; its context goes in the
    /// NATS message's `traceparent` header.
    pub fn bus_publish(&self, subject: &str) -> Option<BusPublish> {
        let t = TRACING.get()?;
        let span = t
            .tracer
            .span_builder("bus publish")
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("messaging.destination.name", subject.to_owned()),
            ])
            .start_with_context(&t.tracer, &self.cx);
        Some(BusPublish { span })
    }
}

/// The `bus publish` span of a traced publish.
#[derive(Debug)]
pub struct BusPublish {
    span: Span,
}

impl BusPublish {
    /// NATS headers carrying this span as the remote parent.
    pub fn headers(&self) -> async_nats::HeaderMap {
        let sc = self.span.span_context();
        let traceparent = Traceparent {
            trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
            flags: sc.trace_flags().to_u8(),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(TRACEPARENT, traceparent.format());
        headers
    }

    /// Marks the publish as failed (the bus was unreachable).
    pub fn failed(mut self) {
        self.span
            .set_status(opentelemetry::trace::Status::error("bus unavailable"));
    }
}

/// Runs a local fan-out (`deliver` returns how many connections it reached)
/// inside a `fanout` span when the publish is traced, else just runs it.
pub fn fanout(publish: Option<&Publish>, deliver: impl FnOnce() -> usize) -> usize {
    match publish {
        None => deliver(),
        Some(p) => traced_fanout(&p.cx, deliver),
    }
}

fn traced_fanout(parent: &Context, deliver: impl FnOnce() -> usize) -> usize {
    let Some(t) = TRACING.get() else {
        return deliver();
    };
    let mut span = t
        .tracer
        .span_builder("fanout")
        .with_kind(SpanKind::Internal)
        .start_with_context(&t.tracer, parent);
    let sent = deliver();
    span.set_attribute(KeyValue::new(
        "roomcast.recipients",
        i64::try_from(sent).unwrap_or(i64::MAX),
    ));
    span.end();
    sent
}

/// Delivers a message received from the bus: inside `bus receive` and
/// `fanout` spans when it carries a sampled `traceparent` (and this
/// gateway's sampler agrees), else just delivers it.
pub fn bus_receive(
    headers: Option<&async_nats::HeaderMap>,
    subject: &str,
    deliver: impl FnOnce() -> usize,
) -> usize {
    let Some(headers) = headers else {
        return deliver();
    };
    let Some(t) = TRACING.get() else {
        return deliver();
    };
    let Some(parent) = headers
        .get(TRACEPARENT)
        .and_then(|v| Traceparent::parse(v.as_str()))
    else {
        return deliver();
    };
    if !t.sampler.samples_child(parent.trace_id, parent.sampled()) {
        return deliver();
    }
    let remote = SpanContext::new(
        TraceId::from(parent.trace_id),
        SpanId::from(parent.span_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    );
    let span = t
        .tracer
        .span_builder("bus receive")
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("messaging.destination.name", subject.to_owned()),
            KeyValue::new("roomcast.node", t.node.clone()),
        ])
        .start_with_context(&t.tracer, &Context::new().with_remote_span_context(remote));
    let cx = Context::new().with_span(span);
    traced_fanout(&cx, deliver)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_w3c_example() {
        let tp = Traceparent::parse(EXAMPLE).unwrap();
        assert_eq!(tp.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(tp.span_id, 0x00f067aa0ba902b7);
        assert!(tp.sampled());
        assert_eq!(tp.format(), EXAMPLE);
    }

    #[test]
    fn formats_with_leading_zeros() {
        let tp = Traceparent {
            trace_id: 1,
            span_id: 2,
            flags: 0,
        };
        assert_eq!(
            tp.format(),
            "00-00000000000000000000000000000001-0000000000000002-00"
        );
        assert_eq!(Traceparent::parse(&tp.format()), Some(tp));
        assert!(!tp.sampled());
    }

    #[test]
    fn rejects_what_the_spec_rejects() {
        for bad in [
            "",
            "00",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(Traceparent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn accepts_future_versions_with_more_fields() {
        let tp =
            Traceparent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future");
        assert!(tp.is_some());
    }

    #[test]
    fn untraced_paths_just_deliver() {
        // No tracer is installed in unit tests: nothing is traced, the
        // delivery still happens exactly once.
        assert!(start_publish("room", "websocket").is_none());
        assert_eq!(fanout(None, || 3), 3);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(TRACEPARENT, EXAMPLE);
        assert_eq!(bus_receive(Some(&headers), "s", || 2), 2);
        assert_eq!(bus_receive(None, "s", || 1), 1);
    }
}
