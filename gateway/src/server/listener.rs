//! The listening sockets, with an accept queue deep enough for a reconnect
//! storm.
//!
//! When a gateway goes away its clients all reconnect to the others within
//! a second or two. tokio's `TcpListener::bind` asks the kernel for a queue
//! of 1,024 completed connections; a storm of 2,500 clients per gateway
//! overflowed it, the kernel dropped the SYNs it had no room for, and those
//! clients came back only after TCP's one-second retransmission (then 3 s,
//! then 7 s). The kernel caps the queue at `net.core.somaxconn`, 4,096 by
//! default since Linux 5.4.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Completed connections the kernel may hold for one listener before the
/// accept loop takes them.
pub const BACKLOG: u32 = 4096;

/// A listener on `addr` with [`BACKLOG`], reusing the address as
/// `TcpListener::bind` does (a restarted gateway is not refused by the
/// TIME_WAIT connections of the one before).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;

    use super::*;

    /// The kernel's cap on any listener's queue here.
    fn somaxconn() -> u32 {
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_storm_larger_than_tokios_default_queue_completes_without_accepts() {
        // More than the 1,024 tokio asks for, within what the kernel allows.
        let storm = 2000;
        assert!(
            somaxconn() > storm,
            "net.core.somaxconn {} cannot hold this test's storm",
            somaxconn()
        );
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // Nobody accepts: every handshake must complete into the queue. A
        // SYN dropped for want of room is retried after 1, 3, 7 s … into a
        // queue that stays full, so its connect would not finish at all.
        let connects: Vec<_> = (0..storm)
            .map(|_| tokio::spawn(tokio::net::TcpStream::connect(addr)))
            .collect();
        let open = timeout(Duration::from_secs(10), async {
            let mut open = Vec::with_capacity(connects.len());
            for connect in connects {
                open.push(connect.await.unwrap().unwrap());
            }
            open
        })
        .await
        .expect("every connection of the storm completes without an accept");
        assert_eq!(open.len(), storm as usize);
        // The queue is the listener's: they are all there to accept.
        for _ in 0..storm {
            timeout(Duration::from_secs(5), listener.accept())
                .await
                .expect("a queued connection to accept")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn an_address_in_use_is_refused() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = bind(first.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
