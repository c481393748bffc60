//! Where a test's service listens, and how the test knows it does.
//!
//! Every service gets a loopback address of its own out of 127.0.0.0/8.
//! The free port a test picks is released before the service binds it,
//! so two tests starting at once can be handed the same port number; on
//! one address the second's connect would then reach the first test's
//! service (its settings, its lifetime). On addresses of their own they
//! cannot meet.
//!
//! The address also rules out a connect that meets itself: a connect to a
//! port nobody listens on can be given that very port as its own, and
//! then succeeds with no listener (TCP's simultaneous open). A client
//! connects from 127.0.0.1, which [`free_addr`] never hands out, and
//! [`listening`] refuses such a connection anyway.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A free port on a loopback address of this call's own.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind((own_loopback(), 0)).unwrap().local_addr().unwrap()
}

/// Whether something other than the connecting socket itself accepts
/// connections on `addr`.
pub fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).is_ok_and(|stream| stream.local_addr().ok() != stream.peer_addr().ok())
}

/// A loopback address other than 127.0.0.1, different on every call but by
/// chance.
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
