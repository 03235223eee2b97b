//! The machine's loopback limit, measured the way `nvmf-perf` moves bytes: one TCP
//! connection over 127.0.0.1, `queue_depth` requests outstanding, each request
//! `req_bytes` from the client and answered with `resp_bytes` by a trivial sink/echo server
//! on its own thread that busy-polls a non-blocking socket (as the target's busy reactor
//! does). With the byte counts of [`super::perf::wire_bytes`] the result is the rate an
//! NVMe/TCP target of zero cost would reach in the same run.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::histogram::Histogram;
use super::perf::PerfResult;
use super::HostError;

/// One echo run.
#[derive(Debug, Clone, Copy)]
pub struct EchoConfig {
    pub queue_depth: u32,
    /// Bytes the client sends per operation.
    pub req_bytes: usize,
    /// Bytes the server answers per operation.
    pub resp_bytes: usize,
    /// Data bytes an operation stands for (the I/O size), for MiB/s.
    pub data_bytes: u32,
    /// Whether the operation stands for a read (for the counters).
    pub read: bool,
    pub duration: Duration,
    /// Client polls a non-blocking socket instead of blocking reads.
    pub busy_poll: bool,
}

fn server(l: TcpListener, req: usize, resp: usize) -> std::io::Result<()> {
    let (mut s, _) = l.accept()?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    let mut rbuf = vec![0u8; 1 << 20];
    let wbuf = vec![0u8; 1 << 20];
    let mut partial = 0usize;
    let mut owed = 0usize;
    loop {
        match s.read(&mut rbuf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                partial += n;
                owed += (partial / req) * resp;
                partial %= req;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e),
        }
        while owed > 0 {
            match s.write(wbuf.get(..owed.min(wbuf.len())).unwrap_or_default()) {
                Ok(n) => owed -= n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == ErrorKind::BrokenPipe
                        || e.kind() == ErrorKind::ConnectionReset =>
                {
                    return Ok(())
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Runs the echo baseline.
pub fn run(cfg: &EchoConfig) -> Result<PerfResult, HostError> {
    let (req, resp) = (cfg.req_bytes.max(1), cfg.resp_bytes.max(1));
    let qd = cfg.queue_depth.max(1) as usize;
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let srv = std::thread::Builder::new()
        .name("echo-server".into())
        .spawn(move || server(l, req, resp))?;
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    if cfg.busy_poll {
        s.set_nonblocking(true)?;
    } else {
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
    }
    let wbuf = vec![0x5Au8; (qd * req).max(1)];
    let mut rbuf = vec![0u8; 1 << 20];
    let mut starts = std::collections::VecDeque::with_capacity(qd);
    let mut hist = Histogram::new();
    let mut owed_tx = 0usize;
    let mut got = 0usize;
    let mut ops = 0u64;
    let start = Instant::now();
    let deadline = start + cfg.duration;
    for _ in 0..qd {
        starts.push_back(start);
        owed_tx += req;
    }
    let mut last_progress = Instant::now();
    while !starts.is_empty() {
        while owed_tx > 0 {
            match s.write(wbuf.get(..owed_tx.min(wbuf.len())).unwrap_or_default()) {
                Ok(n) => owed_tx -= n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if cfg.busy_poll {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let n = match s.read(&mut rbuf) {
            Ok(0) => return Err(super::protocol("the echo server closed the connection")),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            if last_progress.elapsed() > Duration::from_secs(10) {
                return Err(super::protocol("echo: no progress for 10 s"));
            }
            continue;
        }
        last_progress = Instant::now();
        got += n;
        let done = got / resp;
        got %= resp;
        if done == 0 {
            continue;
        }
        let now = Instant::now();
        for _ in 0..done {
            let Some(t0) = starts.pop_front() else {
                return Err(super::protocol("echo: more answers than requests"));
            };
            if now <= deadline {
                hist.record(now.saturating_duration_since(t0).as_nanos() as u64);
                ops += 1;
                starts.push_back(now);
                owed_tx += req;
            }
        }
    }
    let _ = s.shutdown(Shutdown::Both);
    drop(s);
    match srv.join() {
        Ok(r) => r?,
        Err(_) => return Err(super::protocol("the echo server panicked")),
    }
    let (reads, writes) = if cfg.read { (ops, 0) } else { (0, ops) };
    Ok(PerfResult {
        reads,
        writes,
        bytes: ops * u64::from(cfg.data_bytes),
        elapsed: cfg.duration,
        hist,
        ..PerfResult::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_moves_bytes() {
        let r = run(&EchoConfig {
            queue_depth: 4,
            req_bytes: 72,
            resp_bytes: 4096 + 48,
            data_bytes: 4096,
            read: true,
            duration: Duration::from_millis(200),
            busy_poll: false,
        })
        .unwrap();
        assert!(r.reads > 0);
        assert!(r.iops() > 0.0);
    }
}
