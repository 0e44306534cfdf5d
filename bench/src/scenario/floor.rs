//! `floor`: what one delivery costs this machine when nothing but physics is
//! done. N loopback TCP connections; a writer thread writes one pre-encoded
//! WebSocket text frame to each in turn (one `write(2)` per delivery, or
//! `--frames-per-write` frames in one), paced at the offered rate; a reader
//! thread (one tokio thread, as a client side) reads them all. The writer
//! thread's CPU time per delivery is the floor a gateway's CPU per delivery
//! is compared with: it includes the kernel's loopback delivery to the
//! receiving socket, which the writer pays, as a gateway does.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::BenchError;
use crate::latency::round3;
use crate::procstat::parse_cpu_ticks;

/// Parameters of a floor run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Loopback connections written to.
    pub sockets: usize,
    /// Deliveries (frames) per second offered, over all sockets.
    pub rate: f64,
    /// Bytes of the pre-encoded frame, header included.
    pub frame_bytes: usize,
    /// Frames per write call (1: one write per delivery).
    pub frames_per_write: usize,
    /// How long the writer writes.
    pub duration: Duration,
}

/// The result of a floor run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always "floor".
    pub scenario: &'static str,
    /// Connections.
    pub sockets: usize,
    /// Frame size, bytes.
    pub frame_bytes: usize,
    /// Frames per write call.
    pub frames_per_write: usize,
    /// Deliveries per second offered.
    pub offered_deliveries_per_s: f64,
    /// Writing time, seconds.
    pub duration_s: f64,
    /// Frames written.
    pub delivered: u64,
    /// Deliveries per second achieved.
    pub delivered_per_s: f64,
    /// Write calls made.
    pub writes: u64,
    /// Writes refused because a socket buffer was full (the reader fell behind).
    pub would_block: u64,
    /// CPU seconds of the writer thread.
    pub writer_cpu_s: f64,
    /// CPU seconds of the reader thread.
    pub reader_cpu_s: f64,
    /// The floor: writer CPU microseconds per delivery.
    pub cpu_us_per_delivery: f64,
    /// Reader CPU microseconds per delivery (the client side, for reference).
    pub reader_cpu_us_per_delivery: f64,
}

/// Clock ticks per second of /proc stat files.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds the calling thread has used.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| parse_cpu_ticks(&s))
        .map_or(0.0, |t| t as f64 / TICKS_PER_SECOND)
}

/// A WebSocket text frame of exactly `bytes` bytes (at least 4), its payload
/// a JSON-ish filler.
pub fn frame_of(bytes: usize) -> Vec<u8> {
    let (header, payload) = if bytes < 2 + 126 {
        (2, bytes.saturating_sub(2))
    } else {
        (4, bytes - 4)
    };
    let mut frame = Vec::with_capacity(header + payload);
    frame.push(0x81);
    if header == 2 {
        frame.push(payload as u8);
    } else {
        frame.push(126);
        frame.extend_from_slice(&(payload as u16).to_be_bytes());
    }
    frame.extend(std::iter::repeat_n(b'x', payload));
    frame
}

/// Runs the scenario (blocking: it owns two threads for its duration).
pub fn run(cfg: &Config) -> Result<Report, BenchError> {
    if cfg.sockets == 0 || cfg.rate <= 0.0 || cfg.frames_per_write == 0 {
        return Err(BenchError::new(
            "floor needs sockets, a positive rate and frames per write",
        ));
    }
    if !(4..=65_535).contains(&cfg.frame_bytes) {
        return Err(BenchError::new("--frame-bytes must be 4..65535"));
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut clients = Vec::with_capacity(cfg.sockets);
    let mut servers = Vec::with_capacity(cfg.sockets);
    for _ in 0..cfg.sockets {
        clients.push(TcpStream::connect(addr)?);
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        server.set_nonblocking(true)?;
        servers.push(server);
    }
    let one = frame_of(cfg.frame_bytes);
    let buffer: Vec<u8> = one.repeat(cfg.frames_per_write);
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let received = received.clone();
        std::thread::spawn(move || read_all(clients, &received))
    };

    // Rounds: every socket gets one write per round, as a fan-out does.
    let rounds_per_s = cfg.rate / (cfg.sockets * cfg.frames_per_write) as f64;
    let round_every = Duration::from_secs_f64(1.0 / rounds_per_s);
    let cpu_before = thread_cpu_seconds();
    let start = Instant::now();
    let (mut writes, mut would_block, mut delivered) = (0u64, 0u64, 0u64);
    let mut next = start;
    while next < start + cfg.duration {
        for socket in &mut servers {
            writes += 1;
            match socket.write(&buffer) {
                Ok(n) if n == buffer.len() => delivered += cfg.frames_per_write as u64,
                // A partial write would corrupt the stream's framing: the
                // reader only counts bytes, so count whole frames and move on.
                Ok(n) => delivered += (n / one.len()) as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => would_block += 1,
                Err(e) => return Err(e.into()),
            }
        }
        next += round_every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let writer_cpu_s = thread_cpu_seconds() - cpu_before;
    let elapsed = start.elapsed().as_secs_f64();
    // Let the reader take what is in flight (bounded), then end its streams.
    let expected = delivered * one.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(servers);
    let reader_cpu_s = reader
        .join()
        .map_err(|_| BenchError::new("the reader thread panicked"))??;
    let per = |cpu: f64| {
        if delivered == 0 {
            0.0
        } else {
            round3(cpu * 1e6 / delivered as f64)
        }
    };
    Ok(Report {
        scenario: "floor",
        sockets: cfg.sockets,
        frame_bytes: cfg.frame_bytes,
        frames_per_write: cfg.frames_per_write,
        offered_deliveries_per_s: cfg.rate,
        duration_s: round3(elapsed),
        delivered,
        delivered_per_s: round3(delivered as f64 / elapsed.max(1e-3)),
        writes,
        would_block,
        writer_cpu_s: round3(writer_cpu_s),
        reader_cpu_s: round3(reader_cpu_s),
        cpu_us_per_delivery: per(writer_cpu_s),
        reader_cpu_us_per_delivery: per(reader_cpu_s),
    })
}

/// Reads every client socket on one tokio thread until the writer is done
/// and closed its ends; returns the thread's CPU seconds.
fn read_all(clients: Vec<TcpStream>, received: &Arc<AtomicU64>) -> Result<f64, BenchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let before = thread_cpu_seconds();
    runtime.block_on(async {
        let mut tasks = Vec::with_capacity(clients.len());
        for client in clients {
            client.set_nonblocking(true)?;
            let mut stream = tokio::net::TcpStream::from_std(client)?;
            let received = received.clone();
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    received.fetch_add(n as u64, Ordering::Relaxed);
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
        Ok::<(), BenchError>(())
    })?;
    Ok(thread_cpu_seconds() - before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_asked_size_and_a_valid_header() {
        let small = frame_of(100);
        assert_eq!(small.len(), 100);
        assert_eq!(&small[..2], &[0x81, 98]);
        let standard = frame_of(200);
        assert_eq!(standard.len(), 200);
        assert_eq!(&standard[..4], &[0x81, 126, 0, 196]);
    }

    #[test]
    fn a_short_run_delivers_everything_and_measures_cpu() {
        let report = run(&Config {
            sockets: 20,
            rate: 20_000.0,
            frame_bytes: 200,
            frames_per_write: 2,
            duration: Duration::from_millis(300),
        })
        .unwrap();
        assert!(report.delivered > 0);
        assert_eq!(report.would_block, 0);
        assert_eq!(report.delivered, report.writes * 2);
    }
}
