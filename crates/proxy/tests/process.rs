//! The weft-proxy binary as a process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A proxy of one worker stays one thread, memory trims included: glibc makes every `recv`, `writev` and
/// `epoll_wait` of a process that has had a second thread take its cancellable path, about 280
/// instructions per proxied request (`bench/instructions`).
#[test]
fn a_proxy_of_one_worker_is_one_thread_after_it_trims() {
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .args([
            "--workload",
            "one-thread",
            "--concurrency",
            "1",
            "--outbound-port",
            "0",
            "--stats-port",
            "0",
            "--admin-port",
            "0",
            // Nothing listens there: the proxy keeps retrying, which is all this test needs.
            "--xds-address",
            "http://127.0.0.1:9",
            "--log-level",
            "warn,weft_proxy::memory=debug",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weft-proxy");
    let pid = proxy.id();
    // The first periodic trim runs as the proxy starts; its log line says it is done.
    let stdout = proxy.stdout.take().expect("stdout");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut trimmed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("a log line");
        if line.contains("heap trimmed") {
            trimmed = true;
            break;
        }
        assert!(Instant::now() < deadline, "no trim logged within 30 s");
    }
    assert!(trimmed, "the proxy exited before trimming");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(|n| n.trim().to_string());
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert_eq!(
        threads.as_deref(),
        Some("1"),
        "threads of weft-proxy --concurrency 1"
    );
}
