//! This host's own interface addresses, which the access rules shield as they shield
//! loopback: a service bound to 0.0.0.0 that a firewall keeps from the network must not
//! become reachable through the proxy. Read at start-up and on SIGHUP.
//!
//! No safe wrapper lists them (getifaddrs on unix, GetAdaptersAddresses on Windows), so
//! this module opts out of `deny(unsafe_code)`; each block says why it is sound.

#![allow(unsafe_code)]

use std::io;
use std::net::IpAddr;

/// Every address of every interface, each once, in no particular order.
pub(crate) fn addresses() -> io::Result<Vec<IpAddr>> {
    let mut addresses = list()?;
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

#[cfg(unix)]
fn list() -> io::Result<Vec<IpAddr>> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let mut first: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we own into `first` when it returns 0.
    if unsafe { libc::getifaddrs(&mut first) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addresses = Vec::new();
    let mut entry = first;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs made, not freed until below.
        let ifa = unsafe { &*entry };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null ifa_addr points to a sockaddr whose family says what it is,
            // so it is read as a sockaddr_in or sockaddr_in6 only when it is one.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                addresses.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
            } else if family == libc::AF_INET6 {
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                addresses.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        entry = ifa.ifa_next;
    }
    // SAFETY: `first` came from getifaddrs and is freed once; no reference into it is left.
    unsafe { libc::freeifaddrs(first) };
    Ok(addresses)
}

#[cfg(windows)]
fn list() -> io::Result<Vec<IpAddr>> {
    use std::ffi::c_void;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The head of IP_ADAPTER_ADDRESSES_LH (iptypes.h), as far as it is read here.
    #[repr(C)]
    struct Adapter {
        _length: u32,
        _if_index: u32,
        next: *const Adapter,
        _adapter_name: *const u8,
        first_unicast: *const Unicast,
    }
    /// The head of IP_ADAPTER_UNICAST_ADDRESS_LH, up to its SOCKET_ADDRESS.
    #[repr(C)]
    struct Unicast {
        _length: u32,
        _flags: u32,
        next: *const Unicast,
        sockaddr: *const u16,
        sockaddr_len: i32,
    }
    const AF_UNSPEC: u32 = 0;
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 23;
    /// GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST | GAA_FLAG_SKIP_DNS_SERVER.
    const FLAGS: u32 = 0x2 | 0x4 | 0x8;
    const ERROR_BUFFER_OVERFLOW: u32 = 111;
    #[link(name = "iphlpapi")]
    unsafe extern "system" {
        fn GetAdaptersAddresses(
            family: u32,
            flags: u32,
            reserved: *mut c_void,
            addresses: *mut Adapter,
            size: *mut u32,
        ) -> u32;
    }

    // Microsoft suggests 15 KB to start; the call says how much it needs when that is short.
    let mut size: u32 = 15 * 1024;
    let mut buf: Vec<u64>;
    let mut tries = 0;
    loop {
        buf = vec![0u64; (size as usize).div_ceil(8)];
        // SAFETY: `buf` is writable for `size` bytes and 8-byte aligned, as the adapter
        // records need; `size` is a live u32.
        let status =
            unsafe { GetAdaptersAddresses(AF_UNSPEC, FLAGS, std::ptr::null_mut(), buf.as_mut_ptr().cast(), &mut size) };
        tries += 1;
        match status {
            0 => break,
            // The adapters changed between the two calls: ask again, a few times.
            ERROR_BUFFER_OVERFLOW if tries < 4 => continue,
            error => return Err(io::Error::from_raw_os_error(error as i32)),
        }
    }
    let mut addresses = Vec::new();
    let mut adapter = buf.as_ptr().cast::<Adapter>();
    while !adapter.is_null() {
        // SAFETY: the records and the lists they link live in `buf`, which outlives this
        // loop; each pointer is null or points to a record the call wrote.
        let record = unsafe { &*adapter };
        let mut unicast = record.first_unicast;
        while !unicast.is_null() {
            // SAFETY: as above.
            let entry = unsafe { &*unicast };
            if !entry.sockaddr.is_null() {
                // SAFETY: a sockaddr's family says what it is, and its length that the
                // whole sockaddr_in (16 bytes) or sockaddr_in6 (28 bytes) is there.
                let family = unsafe { *entry.sockaddr };
                let bytes = entry.sockaddr.cast::<u8>();
                if family == AF_INET && entry.sockaddr_len >= 16 {
                    let octets: [u8; 4] = unsafe { *bytes.add(4).cast::<[u8; 4]>() };
                    addresses.push(IpAddr::V4(Ipv4Addr::from(octets)));
                } else if family == AF_INET6 && entry.sockaddr_len >= 28 {
                    let octets: [u8; 16] = unsafe { *bytes.add(8).cast::<[u8; 16]>() };
                    addresses.push(IpAddr::V6(Ipv6Addr::from(octets)));
                }
            }
            unicast = entry.next;
        }
        adapter = record.next;
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn they_are_read_each_once() {
        let addresses = addresses().unwrap();
        assert!(addresses.windows(2).all(|pair| pair[0] < pair[1]), "sorted, each once: {addresses:?}");
        // Every unix lists its loopback interface (Wine's Windows may not).
        if cfg!(unix) {
            assert!(addresses.iter().any(IpAddr::is_loopback), "{addresses:?}");
        }
    }
}
