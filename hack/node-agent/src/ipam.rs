//! Pod IP allocation from the pod CIDR; its last usable address belongs to the host bridge.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Failures of parsing the CIDR or allocating from it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The `--pod-cidr` value is not `a.b.c.d/len` with a usable length.
    #[error("invalid pod CIDR {0:?}: expected a.b.c.d/len with len between 8 and 29")]
    InvalidCidr(String),
    /// Every pod address of the range is in use.
    #[error("failed to allocate a pod IP: all {0} pod addresses are in use")]
    Exhausted(usize),
}

/// An IPv4 network, normalised so that `base` has no host bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidCidr(s.to_owned());
        let (addr, len) = s.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let prefix: u8 = len.parse().map_err(|_| invalid())?;
        // /30 and longer leave no room for both pods and the gateway.
        if !(8..=29).contains(&prefix) {
            return Err(invalid());
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            base: u32::from(addr) & mask,
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl Cidr {
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn broadcast(&self) -> u32 {
        self.base | (u32::MAX >> self.prefix)
    }

    /// The host's address on the pod network: the pods' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.broadcast() - 1)
    }

    /// The host part of `ip`, unique within the network (used to name veth devices).
    pub fn host_part(&self, ip: Ipv4Addr) -> u32 {
        u32::from(ip) & (u32::MAX >> self.prefix)
    }

    fn pod_range(&self) -> std::ops::RangeInclusive<u32> {
        self.base + 1..=self.broadcast() - 2
    }
}

/// In-memory allocator; the apiserver's pod statuses are the durable record.
#[derive(Debug)]
pub struct Ipam {
    cidr: Cidr,
    in_use: BTreeSet<u32>,
    /// Where the next search starts: round-robin, so a just-released IP is not reused at once
    /// (clients may still hold it).
    next: u32,
}

impl Ipam {
    pub fn new(cidr: Cidr) -> Self {
        Self {
            cidr,
            in_use: BTreeSet::new(),
            next: *cidr.pod_range().start(),
        }
    }

    pub fn allocate(&mut self) -> Result<Ipv4Addr, Error> {
        let range = self.cidr.pod_range();
        let size = (range.end() - range.start() + 1) as usize;
        let mut candidate = self.next;
        for _ in 0..size {
            if !range.contains(&candidate) {
                candidate = *range.start();
            }
            if self.in_use.insert(candidate) {
                self.next = candidate + 1;
                return Ok(Ipv4Addr::from(candidate));
            }
            candidate += 1;
        }
        Err(Error::Exhausted(size))
    }

    /// Claims a specific address (a pod's IP from before an agent restart). False when the
    /// address is outside the pod range or taken.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        self.cidr.pod_range().contains(&ip) && self.in_use.insert(ip)
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.in_use.remove(&u32::from(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_normalises_the_cidr() {
        let cidr: Cidr = "10.244.3.7/16".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.244.0.0/16");
        assert_eq!(cidr.gateway(), ip("10.244.255.254"));
        assert_eq!(cidr.host_part(ip("10.244.1.2")), 0x0102);
    }

    #[test]
    fn rejects_malformed_cidrs() {
        for bad in [
            "10.244.0.0",
            "10.244.0.0/31",
            "10.244.0.0/4",
            "x/16",
            "10.0.0.0/a",
        ] {
            assert_eq!(
                bad.parse::<Cidr>(),
                Err(Error::InvalidCidr(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn allocates_round_robin_and_skips_taken_addresses() {
        let mut ipam = Ipam::new("10.0.0.0/24".parse().unwrap());
        assert!(ipam.reserve(ip("10.0.0.2")));
        assert_eq!(ipam.allocate(), Ok(ip("10.0.0.1")));
        assert_eq!(ipam.allocate(), Ok(ip("10.0.0.3")));
        ipam.release(ip("10.0.0.1"));
        // Not handed out again until the range wraps.
        assert_eq!(ipam.allocate(), Ok(ip("10.0.0.4")));
    }

    #[test]
    fn never_hands_out_network_gateway_or_broadcast() {
        let mut ipam = Ipam::new("10.0.0.0/29".parse().unwrap());
        let got: Vec<_> = (0..5).map(|_| ipam.allocate().unwrap()).collect();
        assert_eq!(got.first(), Some(&ip("10.0.0.1")));
        assert_eq!(got.last(), Some(&ip("10.0.0.5")));
        assert_eq!(ipam.allocate(), Err(Error::Exhausted(5)));
        assert!(
            !ipam.reserve(ip("10.0.0.6")),
            "gateway is not a pod address"
        );
        ipam.release(ip("10.0.0.3"));
        assert_eq!(ipam.allocate(), Ok(ip("10.0.0.3")));
    }

    #[test]
    fn reserve_rejects_foreign_and_taken_addresses() {
        let mut ipam = Ipam::new("10.0.0.0/24".parse().unwrap());
        assert!(!ipam.reserve(ip("192.168.0.1")));
        assert!(ipam.reserve(ip("10.0.0.9")));
        assert!(!ipam.reserve(ip("10.0.0.9")));
    }
}
