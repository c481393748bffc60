//! A `tally up` or `tally ingest` of a test, on the release binary: started
//! on a free port of a loopback address of its own ([`super::net`], which
//! a test using this module declares too) with signatures off, and killed
//! when dropped so a failing test leaves nothing running.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::net::{free_addr, listening};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

/// Longest a service may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `tally` service.
pub struct Service(pub Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tally --data-dir DATA COMMAND --no-auth --addr ADDR ARGS…` and
/// waits until it listens. Its output goes to `output/stdout` and
/// `output/stderr` when `output` is given, else nowhere.
pub fn start(data: &Path, command: &str, args: &[&str], output: Option<&Path>) -> (Service, SocketAddr) {
    let addr = free_addr();
    let to = |name: &str| output.map_or_else(Stdio::null, |dir| Stdio::from(File::create(dir.join(name)).unwrap()));
    let child = Command::new(TALLY)
        .arg("--data-dir")
        .arg(data)
        .args([command, "--no-auth", "--addr", &addr.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(to("stdout"))
        .stderr(to("stderr"))
        .spawn()
        .expect("spawn tally");
    let mut service = Service(child);
    let started = Instant::now();
    while !listening(addr) {
        assert!(service.0.try_wait().unwrap().is_none(), "tally {command} exited before listening");
        assert!(started.elapsed() < LISTEN_TIMEOUT, "tally {command} did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(service.0.try_wait().unwrap().is_none(), "tally {command} exited: {addr} answers for another process");
    (service, addr)
}
