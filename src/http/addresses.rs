//! The connections each client address holds, and the cap on them.
//!
//! The global `max_connections` alone lets one client take every permit
//! with sockets that send nothing, and everyone else waits in the accept
//! queue. With a per-address cap, a connection beyond it is closed as soon
//! as it is accepted, so one address never holds more than its cap and the
//! rest of the permits stay for others. IPv6 clients are counted by their
//! /64 network: one host is routinely given a whole /64.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Bits of an IPv6 address that name the client's network.
const IPV6_CLIENT_PREFIX_BITS: u32 = 64;

/// Open connections by client address. An entry exists only while its
/// address holds a connection, so the map never outgrows the connections
/// (at most `max_connections`).
#[derive(Debug)]
pub struct Addresses {
    open: Mutex<HashMap<IpAddr, usize>>,
    cap: usize,
}

impl Addresses {
    pub fn new(cap: usize) -> Arc<Addresses> {
        Arc::new(Addresses { open: Mutex::new(HashMap::new()), cap })
    }

    fn open(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more connection from `ip`, or `None` if its address
    /// holds the cap already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let client = client(ip);
        let mut open = self.open();
        let held = open.get(&client).copied().unwrap_or(0);
        if held >= self.cap {
            return None;
        }
        open.insert(client, held + 1);
        Some(Slot { addresses: Arc::clone(self), client })
    }
}

/// The address a connection from `ip` is counted under.
fn client(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & (u128::MAX << (128 - IPV6_CLIENT_PREFIX_BITS)))),
        v4 => v4,
    }
}

/// One connection's place in its address's count, given back on drop.
#[derive(Debug)]
pub struct Slot {
    addresses: Arc<Addresses>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.addresses.open();
        match open.get(&self.client).copied() {
            Some(held) if held > 1 => {
                open.insert(self.client, held - 1);
            }
            _ => {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_cap_and_gets_places_back() {
        let addresses = Addresses::new(2);
        let attacker: IpAddr = "127.0.0.7".parse().unwrap();
        let first = addresses.admit(attacker).unwrap();
        let second = addresses.admit(attacker).unwrap();
        assert!(addresses.admit(attacker).is_none(), "a third is refused");
        assert!(addresses.admit("127.0.0.1".parse().unwrap()).is_some(), "another address is not");
        drop(first);
        let third = addresses.admit(attacker).expect("a place came back");
        assert_eq!(addresses.open().get(&attacker), Some(&2));
        drop((second, third));
        assert!(addresses.open().is_empty(), "no entry is left for an address without connections");
    }

    #[test]
    fn ipv6_counts_by_network_and_mapped_ipv4_as_ipv4() {
        let addresses = Addresses::new(1);
        let _held = addresses.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(addresses.admit("2001:db8::2".parse().unwrap()).is_none(), "the same /64");
        assert!(addresses.admit("2001:db8:0:1::1".parse().unwrap()).is_some(), "another /64");
        let _v4 = addresses.admit("::ffff:10.0.0.1".parse().unwrap()).unwrap();
        assert!(addresses.admit("10.0.0.1".parse().unwrap()).is_none(), "mapped is the same address");
    }
}
