//! Where the load goes: WebSocket URLs restricted to loopback addresses, and
//! the loopback source addresses that let one process open more connections
//! than the ephemeral port range allows from a single address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::BenchError;

/// A gateway (or baseline node) the load generator may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The WebSocket URL as given, e.g. `ws://127.0.0.1:8080/ws`.
    pub url: String,
    /// The socket address it resolves to; always a loopback address.
    pub addr: SocketAddr,
}

/// Parses a `ws://host:port/path` URL whose host is a loopback address
/// (`127.0.0.0/8`, `[::1]` or `localhost`). Anything else is refused: the
/// benchmarks never send traffic off this machine.
pub fn parse_target(url: &str) -> Result<Target, BenchError> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| BenchError::new(format!("{url}: only ws:// URLs are supported")))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let addr = parse_loopback_authority(authority, 80)
        .map_err(|why| BenchError::new(format!("{url}: {why}")))?;
    Ok(Target {
        url: url.to_owned(),
        addr,
    })
}

/// Parses `host:port` (port optional) whose host must be a loopback address.
pub fn parse_loopback_authority(authority: &str, default_port: u16) -> Result<SocketAddr, String> {
    let (host, port) = split_host_port(authority)?;
    let port = match port {
        Some(text) => text
            .parse::<u16>()
            .map_err(|_| format!("bad port {text:?}"))?,
        None => default_port,
    };
    let ip = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other
            .parse::<IpAddr>()
            .map_err(|_| format!("host {other:?} is not an IP address or localhost"))?,
    };
    if !ip.is_loopback() {
        return Err(format!("{ip} is not a loopback address"));
    }
    Ok(SocketAddr::new(ip, port))
}

fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in {authority:?}"))?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(format!("bad authority {authority:?}")),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

/// The source address of the `index`-th connection when each source address
/// carries `per_address` connections: 127.0.0.2, 127.0.0.3, … for IPv4
/// loopback targets. `None` when binding is off (`per_address == 0`), for IPv6
/// targets, or past the end of 127.0.0.0/8.
pub fn source_address(index: usize, per_address: usize, target: &SocketAddr) -> Option<IpAddr> {
    if per_address == 0 || !target.is_ipv4() {
        return None;
    }
    let offset = u32::try_from(index / per_address).ok()?.checked_add(2)?;
    if offset >= 0x00ff_ffff {
        return None;
    }
    Some(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | offset)))
}

/// Whether an address is the IPv6 loopback, for callers that must pick a
/// socket family.
pub fn is_ipv6(addr: &SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V6(ip) if ip == Ipv6Addr::LOCALHOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_accepted() {
        let t = parse_target("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        let t = parse_target("ws://localhost:81/ws").unwrap();
        assert_eq!(t.addr, "127.0.0.1:81".parse().unwrap());
        let t = parse_target("ws://[::1]:9000/ws").unwrap();
        assert_eq!(t.addr, "[::1]:9000".parse().unwrap());
        let t = parse_target("ws://127.4.5.6/ws").unwrap();
        assert_eq!(t.addr.port(), 80);
    }

    #[test]
    fn anything_off_this_machine_is_refused() {
        for url in [
            "ws://10.0.0.1:8080/ws",
            "ws://192.168.1.1/ws",
            "ws://example.com:80/ws",
            "ws://8.8.8.8/ws",
            "wss://127.0.0.1/ws",
            "http://127.0.0.1/ws",
            "ws://127.0.0.1:http/ws",
            "ws://[::2]:80/ws",
        ] {
            assert!(parse_target(url).is_err(), "{url} must be refused");
        }
    }

    #[test]
    fn source_addresses_step_through_loopback() {
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(source_address(0, 0, &v4), None);
        assert_eq!(
            source_address(0, 1000, &v4),
            Some("127.0.0.2".parse().unwrap())
        );
        assert_eq!(
            source_address(999, 1000, &v4),
            Some("127.0.0.2".parse().unwrap())
        );
        assert_eq!(
            source_address(1000, 1000, &v4),
            Some("127.0.0.3".parse().unwrap())
        );
        assert_eq!(
            source_address(254 * 1000, 1000, &v4),
            Some("127.0.1.0".parse().unwrap())
        );
        let v6: SocketAddr = "[::1]:8080".parse().unwrap();
        assert_eq!(source_address(5, 1, &v6), None);
        assert!(is_ipv6(&v6));
    }
}
