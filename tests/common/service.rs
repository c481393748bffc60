//! A `tally up` or `tally ingest` of a test, on the release binary: started
//! on a free port of a loopback address of its own with signatures off, and killed when dropped so
//! a failing test leaves nothing running.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    let addr = TcpListener::bind((own_loopback(), 0)).unwrap().local_addr().unwrap();
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
    while TcpStream::connect(addr).is_err() {
        assert!(service.0.try_wait().unwrap().is_none(), "tally {command} exited before listening");
        assert!(started.elapsed() < LISTEN_TIMEOUT, "tally {command} did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(service.0.try_wait().unwrap().is_none(), "tally {command} exited: {addr} answers for another process");
    (service, addr)
}

/// A loopback address for one service, out of 127.0.0.0/8. The free port
/// a test picks is released before the service binds it, so two tests
/// starting at once can be handed the same port number, and the second's
/// connect then reaches the first test's service (its settings, its
/// lifetime: it is killed when that test ends). On addresses of their own
/// they cannot meet.
fn own_loopback() -> Ipv4Addr {
    static STARTED: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut h = (u64::from(std::process::id()) << 32) ^ STARTED.fetch_add(1, Ordering::Relaxed) ^ nanos;
    // splitmix64's finalizer: every input bit moves every output bit.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    Ipv4Addr::new(127, 1 + (h % 254) as u8, (h >> 8) as u8, 1 + ((h >> 16) % 254) as u8)
}
