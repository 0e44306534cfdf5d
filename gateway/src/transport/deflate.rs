//! permessage-deflate (RFC 7692), the gateway's side of it, pure: choosing
//! an offer in the upgrade, compressing a server message, inflating a client
//! message under the size limit.
//!
//! The gateway always answers with `server_no_context_takeover` and
//! `client_no_context_takeover`: every message is compressed on its own, so a
//! message is compressed once and the same bytes go to every recipient that
//! negotiated compression (see `delivery/frame.rs`), and a connection keeps no
//! deflate state between messages (an idle connection holds none).

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";

/// What every message's compressed data ends with before the tail is removed
/// (RFC 7692 §7.2.1), and what is appended again before inflating (§7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Deflate's window, in bits: the one size miniz_oxide compresses with. An
/// offer asking the server for a smaller window is declined.
const WINDOW_BITS: u8 = 15;

/// Inflated bytes produced per step, so a message over the limit is stopped
/// within one step of passing it.
const INFLATE_STEP: usize = 16 * 1024;

/// Chooses the first acceptable permessage-deflate offer among the
/// `Sec-WebSocket-Extensions` header values and returns the response's value;
/// `None` when there is no acceptable offer (the connection is uncompressed).
pub fn negotiate<'a>(offers: impl IntoIterator<Item = &'a str>) -> Option<String> {
    offers
        .into_iter()
        .flat_map(split_outside_quotes(','))
        .find_map(accept)
}

/// The response to one offer (`name; param; param=value`), if acceptable.
fn accept(offer: &str) -> Option<String> {
    let mut parts = split_outside_quotes(';')(offer);
    if !parts.next()?.trim().eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut server_window = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param.trim(), None),
        };
        let name = name.to_ascii_lowercase();
        // §7: a parameter given twice makes the offer invalid.
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            // The client may limit its own window; ours inflates any window.
            ("client_max_window_bits", value) => {
                if value.is_some_and(|v| window_bits(v).is_none()) {
                    return None;
                }
            }
            ("server_max_window_bits", Some(value)) => {
                // We can only compress with a 15-bit window.
                if window_bits(value)? != WINDOW_BITS {
                    return None;
                }
                server_window = Some(WINDOW_BITS);
            }
            _ => return None,
        }
        seen.push(name);
    }
    let mut response = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_window {
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    Some(response)
}

/// A window size parameter's value: 8 to 15, digits only (§7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// Splits a header value on `sep`, except inside quoted strings.
fn split_outside_quotes(sep: char) -> impl Fn(&str) -> std::vec::IntoIter<&str> {
    move |value| {
        let mut parts = Vec::new();
        let (mut start, mut quoted) = (0, false);
        for (i, c) in value.char_indices() {
            if c == '"' {
                quoted = !quoted;
            } else if c == sep && !quoted {
                parts.push(&value[start..i]);
                start = i + 1;
            }
        }
        parts.push(&value[start..]);
        parts.into_iter()
    }
}

thread_local! {
    /// One compressor per thread, reset before every message (no context
    /// takeover), so compressing allocates nothing but the output.
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::default(), false));
}

/// A message's payload compressed as one permessage-deflate message (the
/// frame then has RSV1 set); `None` if the compressor fails, and the message
/// goes uncompressed.
pub fn compress(payload: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|compressor| {
        let mut compressor = compressor.borrow_mut();
        compressor.reset();
        // Incompressible data grows by a few bytes per block.
        let mut out = Vec::with_capacity(payload.len() + payload.len() / 1000 + 64);
        loop {
            let consumed = usize::try_from(compressor.total_in()).ok()?;
            compressor
                .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
                .ok()?;
            // The flush is complete once all input is in and it left room.
            if compressor.total_in() == payload.len() as u64
                && out.len() < out.capacity()
                && out.ends_with(&TAIL)
            {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        // §7.2.1: the empty stored block's tail is removed.
        out.truncate(out.len() - TAIL.len());
        Some(out)
    })
}

/// Why a compressed client message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the limit (close 1009); inflating stopped there.
    TooBig,
    /// Not a deflate stream (close 1007: the payload is invalid).
    Corrupt,
}

/// Inflates one compressed client message, refusing it as soon as it passes
/// `max` bytes: a decompression bomb costs at most `max` bytes and one step.
pub fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let mut inflater = Decompress::new(false);
    let mut out = Vec::new();
    for input in [compressed, &TAIL[..]] {
        let mut consumed = 0;
        loop {
            // Room for one step past the limit at most, so passing it is seen.
            out.reserve_exact(INFLATE_STEP.min(max + 1 - out.len().min(max)));
            let before = (inflater.total_in(), out.len());
            let status = inflater
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            consumed += usize::try_from(inflater.total_in() - before.0).unwrap_or(usize::MAX);
            if out.len() > max {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                // A final block (allowed, §7.2.3.3): nothing after it counts.
                return Ok(out);
            }
            let room_left = out.len() < out.capacity();
            if consumed >= input.len() && room_left {
                break;
            }
            if room_left && inflater.total_in() == before.0 && out.len() == before.1 {
                // Nothing moves although there is room: not a deflate stream.
                return Err(InflateError::Corrupt);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_accepted_without_context_takeover() {
        let plain = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        assert_eq!(negotiate(["permessage-deflate"]).as_deref(), Some(plain));
        // What Python's websockets and browsers send.
        assert_eq!(
            negotiate(["permessage-deflate; client_max_window_bits"]).as_deref(),
            Some(plain)
        );
        assert_eq!(
            negotiate([
                "x-webkit-deflate-frame",
                "permessage-deflate; client_max_window_bits=12"
            ])
            .as_deref(),
            Some(plain)
        );
        assert_eq!(
            negotiate(["permessage-deflate; server_max_window_bits=\"15\""]).as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15"
            )
        );
        // A smaller server window is declined; the next offer is taken.
        assert_eq!(
            negotiate(["permessage-deflate; server_max_window_bits=10, permessage-deflate"])
                .as_deref(),
            Some(plain)
        );
    }

    #[test]
    fn invalid_or_unknown_offers_are_declined() {
        for offer in [
            "",
            "deflate-frame",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=015",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
        ] {
            assert_eq!(negotiate([offer]), None, "{offer:?}");
        }
    }

    #[test]
    fn compressed_messages_round_trip_and_lose_their_tail() {
        for payload in [
            &b""[..],
            b"a",
            br#"{"type":"message","room":"r","from":"u","data":"hello hello hello"}"#,
            &[7u8; 200_000],
        ] {
            let compressed = compress(payload).unwrap();
            assert!(!compressed.ends_with(&TAIL));
            assert_eq!(inflate(&compressed, 1 << 20).unwrap(), payload);
        }
        let text = "roomcast ".repeat(200);
        assert!(compress(text.as_bytes()).unwrap().len() < text.len() / 10);
        // The example of RFC 7692 §7.2.3.1.
        assert_eq!(
            inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(),
            b"Hello"
        );
        // Messages are independent: the same input, the same bytes.
        assert_eq!(compress(text.as_bytes()), compress(text.as_bytes()));
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let bomb = compress(&vec![0u8; 8 * 1024 * 1024]).unwrap();
        assert!(bomb.len() < 16 * 1024);
        assert_eq!(inflate(&bomb, 64 * 1024), Err(InflateError::TooBig));
        let exact = compress(&[1u8; 1000]).unwrap();
        assert_eq!(inflate(&exact, 1000).unwrap().len(), 1000);
        assert_eq!(inflate(&exact, 999), Err(InflateError::TooBig));
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        assert_eq!(inflate(&[0xff; 64], 1000), Err(InflateError::Corrupt));
    }
}
