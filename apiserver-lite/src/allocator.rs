//! ClusterIP and NodePort allocation for Services, done in the API server as upstream does
//! (pkg/registry/core/service/ipallocator and portallocator): one in-memory set per range behind a
//! mutex, so concurrent creates never get the same address or port; rebuilt from the stored
//! Services when the server starts.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use parking_lot::Mutex;
use rand::Rng;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("provided IP is not in the valid range. The range of valid IPs is {0}")]
    IpOutOfRange(String),
    #[error("provided IP is already allocated")]
    IpAllocated,
    #[error("provided port is not in the valid range. The range of valid ports is {0}-{1}")]
    PortOutOfRange(u16, u16),
    #[error("provided port is already allocated")]
    PortAllocated,
    #[error("range is full")]
    Full,
    #[error("invalid range {0}")]
    BadRange(String),
}

/// An IPv4 service CIDR such as `10.96.0.0/12`.
#[derive(Debug)]
pub struct IpAllocator {
    cidr: String,
    base: u32,
    size: u32,
    used: Mutex<HashSet<u32>>,
}

impl IpAllocator {
    pub fn new(cidr: &str) -> Result<Self, AllocError> {
        let bad = || AllocError::BadRange(cidr.to_string());
        let (addr, bits) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let bits: u32 = bits.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&bits) {
            return Err(bad());
        }
        let size = 1u32 << (32 - bits);
        let base = u32::from(addr) & !(size - 1);
        Ok(IpAllocator {
            cidr: cidr.to_string(),
            base,
            size,
            used: Mutex::new(HashSet::new()),
        })
    }

    /// The first usable address (the `kubernetes` Service's).
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    fn offset(&self, ip: &str) -> Result<u32, AllocError> {
        let out = || AllocError::IpOutOfRange(self.cidr.clone());
        let ip: Ipv4Addr = ip.parse().map_err(|_| out())?;
        let v = u32::from(ip);
        // Network and broadcast addresses are never handed out.
        if v <= self.base || v >= self.base + self.size - 1 {
            return Err(out());
        }
        Ok(v - self.base)
    }

    /// Reserves a given address.
    pub fn allocate(&self, ip: &str) -> Result<(), AllocError> {
        let off = self.offset(ip)?;
        if !self.used.lock().insert(off) {
            return Err(AllocError::IpAllocated);
        }
        Ok(())
    }

    /// The size of the range's lower band kept for addresses chosen by hand (upstream's
    /// ServiceIPStaticSubrange: size/16, at least 16 and at most 256; none below 16 addresses),
    /// such as the cluster DNS IP, the 10th address.
    fn static_band(&self) -> u32 {
        if self.size < 16 {
            return 0;
        }
        (self.size / 16).clamp(16, 256)
    }

    /// Picks a free address at random, as upstream does: from above the static band first, from
    /// the band only when the rest is full.
    pub fn allocate_next(&self) -> Result<String, AllocError> {
        let mut used = self.used.lock();
        let usable = self.size - 2;
        if used.len() as u32 >= usable {
            return Err(AllocError::Full);
        }
        // Offsets 1..=usable; the band is 1..band, the rest band..=usable.
        let band = self.static_band().clamp(1, usable);
        for (lo, hi) in [(band, usable + 1), (1, band)] {
            if lo >= hi {
                continue;
            }
            let n = hi - lo;
            let start = rand::rng().random_range(0..n);
            for i in 0..n {
                let off = lo + (start + i) % n;
                if used.insert(off) {
                    return Ok(Ipv4Addr::from(self.base + off).to_string());
                }
            }
        }
        Err(AllocError::Full)
    }

    pub fn release(&self, ip: &str) {
        if let Ok(off) = self.offset(ip) {
            self.used.lock().remove(&off);
        }
    }
}

/// The node-port range such as 30000-32767.
#[derive(Debug)]
pub struct PortAllocator {
    pub low: u16,
    pub high: u16,
    used: Mutex<HashSet<u16>>,
}

impl PortAllocator {
    pub fn new(range: &str) -> Result<Self, AllocError> {
        let bad = || AllocError::BadRange(range.to_string());
        let (l, h) = range.split_once('-').ok_or_else(bad)?;
        let (low, high): (u16, u16) =
            (l.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
        if low > high {
            return Err(bad());
        }
        Ok(PortAllocator {
            low,
            high,
            used: Mutex::new(HashSet::new()),
        })
    }

    pub fn allocate(&self, port: u16) -> Result<(), AllocError> {
        if port < self.low || port > self.high {
            return Err(AllocError::PortOutOfRange(self.low, self.high));
        }
        if !self.used.lock().insert(port) {
            return Err(AllocError::PortAllocated);
        }
        Ok(())
    }

    pub fn allocate_next(&self) -> Result<u16, AllocError> {
        let mut used = self.used.lock();
        let n = (self.high - self.low) as u32 + 1;
        let start = rand::rng().random_range(0..n);
        for i in 0..n {
            let p = self.low + ((start + i) % n) as u16;
            if used.insert(p) {
                return Ok(p);
            }
        }
        Err(AllocError::Full)
    }

    pub fn release(&self, port: u16) {
        self.used.lock().remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_are_unique_and_in_range() {
        let a = IpAllocator::new("10.96.0.0/29").unwrap();
        assert_eq!(a.first().to_string(), "10.96.0.1");
        let mut got: Vec<String> = (0..6).map(|_| a.allocate_next().unwrap()).collect();
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 6);
        assert_eq!(a.allocate_next(), Err(AllocError::Full));
        a.release("10.96.0.3");
        assert_eq!(a.allocate("10.96.0.3"), Ok(()));
        assert_eq!(a.allocate("10.96.0.3"), Err(AllocError::IpAllocated));
        assert!(matches!(
            a.allocate("10.97.0.3"),
            Err(AllocError::IpOutOfRange(_))
        ));
    }

    #[test]
    fn dynamic_ips_avoid_the_static_band_until_the_rest_is_full() {
        // A /24: the band is the first 16 addresses (the cluster DNS IP, .10, among them).
        let a = IpAllocator::new("10.96.0.0/24").unwrap();
        let upper: Vec<String> = (0..239).map(|_| a.allocate_next().unwrap()).collect();
        assert!(
            upper
                .iter()
                .all(|ip| ip.rsplit('.').next().unwrap().parse::<u32>().unwrap() >= 16),
            "dynamic addresses come from above the band first: {upper:?}"
        );
        let band: Vec<String> = (0..15).map(|_| a.allocate_next().unwrap()).collect();
        assert!(
            band.contains(&"10.96.0.10".to_string()),
            "then from the band: {band:?}"
        );
        assert_eq!(a.allocate_next(), Err(AllocError::Full));
    }

    #[test]
    fn ports_are_unique_and_in_range() {
        let p = PortAllocator::new("30000-30002").unwrap();
        let mut got: Vec<u16> = (0..3).map(|_| p.allocate_next().unwrap()).collect();
        got.sort();
        assert_eq!(got, [30000, 30001, 30002]);
        assert_eq!(p.allocate_next(), Err(AllocError::Full));
        assert_eq!(
            p.allocate(29999),
            Err(AllocError::PortOutOfRange(30000, 30002))
        );
    }
}
