//! Where a service's outbound traffic leaves from: `--bind-out` and `--interface`, or the
//! same settings as `-L` URL options (`?bind-out=…&interface=…`). Pure parsing; the sockets
//! are prepared in `outbound::egress`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// A service's outbound settings. `None` leaves a choice to the operating system's routing;
/// a service's own settings are completed from the flags with [`Egress::or`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    /// `--bind-out`: the source address of every outbound socket.
    pub bind: Option<BindOut>,
    /// `--interface`: the interface every outbound socket is bound to.
    pub interface: Option<Arc<str>>,
}

/// What `--bind-out` chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindOut {
    /// Outbound sockets of a family leave from its address; a family with none is not used
    /// at all, so nothing leaves from an address the user did not choose.
    Addrs { v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr> },
    /// Each session's outbound sockets leave from the address its client connected to
    /// (`same`), and so only over that address's family.
    Same,
}

/// Longest interface name the kernel takes (IFNAMSIZ, 16, less its NUL).
const MAX_INTERFACE_LEN: usize = 15;

impl Egress {
    /// Adds one `--bind-out` value: `same`, or an address (at most one of each family).
    pub fn add_bind_out(&mut self, text: &str) -> Result<(), String> {
        let given = match text {
            "same" => BindOut::Same,
            _ => match text.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                    return Err(format!("{ip} cannot be a source address"));
                }
                Ok(IpAddr::V4(ip)) => BindOut::Addrs { v4: Some(ip), v6: None },
                Ok(IpAddr::V6(ip)) => BindOut::Addrs { v4: None, v6: Some(ip) },
                Err(_) => return Err(format!("{text:?} is not an IP address or \"same\"")),
            },
        };
        self.bind = Some(match (self.bind, given) {
            (None, given) => given,
            (Some(BindOut::Same), BindOut::Same) => BindOut::Same,
            (Some(BindOut::Same), _) | (Some(_), BindOut::Same) => {
                return Err("\"same\" cannot be combined with an address".into());
            }
            (Some(BindOut::Addrs { v4, v6 }), BindOut::Addrs { v4: new_v4, v6: new_v6 }) => {
                if (v4.is_some() && new_v4.is_some()) || (v6.is_some() && new_v6.is_some()) {
                    return Err("at most one IPv4 and one IPv6 address".into());
                }
                BindOut::Addrs { v4: v4.or(new_v4), v6: v6.or(new_v6) }
            }
        });
        Ok(())
    }

    /// Sets the `--interface` name.
    pub fn set_interface(&mut self, name: &str) -> Result<(), String> {
        let printable = |b: u8| b.is_ascii_graphic() && b != b'/';
        if name.is_empty() || name.len() > MAX_INTERFACE_LEN || !name.bytes().all(printable) {
            return Err(format!("{name:?} is not an interface name (1 to {MAX_INTERFACE_LEN} characters, no '/')"));
        }
        self.interface = Some(name.into());
        Ok(())
    }

    /// These settings, each one not set here taken from `fallback` (the flags').
    pub fn or(self, fallback: &Egress) -> Egress {
        Egress { bind: self.bind.or(fallback.bind), interface: self.interface.or_else(|| fallback.interface.clone()) }
    }

    /// Neither setting given: the operating system chooses.
    pub fn is_default(&self) -> bool {
        self.bind.is_none() && self.interface.is_none()
    }
}

/// As `--check` shows it: `bind-out 192.0.2.7 2001:db8::7, interface wg0`.
impl fmt::Display for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bind {
            None => write!(f, "bind-out any")?,
            Some(BindOut::Same) => write!(f, "bind-out same (the address the client reached)")?,
            Some(BindOut::Addrs { v4, v6 }) => {
                write!(f, "bind-out")?;
                for ip in [v4.map(IpAddr::V4), v6.map(IpAddr::V6)].into_iter().flatten() {
                    write!(f, " {ip}")?;
                }
                match (v4, v6) {
                    (Some(_), None) => write!(f, " (IPv4 only)")?,
                    (None, Some(_)) => write!(f, " (IPv6 only)")?,
                    _ => {}
                }
            }
        }
        if let Some(name) = &self.interface {
            write!(f, ", interface {name}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind_out(values: &[&str]) -> Result<Egress, String> {
        let mut egress = Egress::default();
        for value in values {
            egress.add_bind_out(value)?;
        }
        Ok(egress)
    }

    #[test]
    fn one_address_of_each_family_or_same() {
        let both = bind_out(&["192.0.2.7", "2001:db8::7"]).unwrap();
        let v4 = Some("192.0.2.7".parse().unwrap());
        let v6 = Some("2001:db8::7".parse().unwrap());
        assert_eq!(both.bind, Some(BindOut::Addrs { v4, v6 }));
        assert_eq!(both.to_string(), "bind-out 192.0.2.7 2001:db8::7");
        assert_eq!(bind_out(&["2001:db8::7"]).unwrap().to_string(), "bind-out 2001:db8::7 (IPv6 only)");
        assert_eq!(bind_out(&["same", "same"]).unwrap().bind, Some(BindOut::Same));
    }

    #[test]
    fn bad_bind_outs_say_why() {
        let table: &[(&[&str], &str)] = &[
            (&["192.0.2.7", "192.0.2.8"], "at most one IPv4 and one IPv6 address"),
            (&["::1", "2001:db8::1"], "at most one IPv4 and one IPv6 address"),
            (&["same", "192.0.2.7"], "\"same\" cannot be combined with an address"),
            (&["::1", "same"], "\"same\" cannot be combined with an address"),
            (&["0.0.0.0"], "0.0.0.0 cannot be a source address"),
            (&["ff02::1"], "ff02::1 cannot be a source address"),
            (&["eth0"], "\"eth0\" is not an IP address or \"same\""),
        ];
        for (values, want) in table {
            assert_eq!(bind_out(values).unwrap_err(), *want, "{values:?}");
        }
    }

    #[test]
    fn interface_names_the_kernel_could_hold() {
        let mut egress = Egress::default();
        egress.set_interface("wg0").unwrap();
        assert_eq!(egress.to_string(), "bind-out any, interface wg0");
        for bad in ["", "a-name-of-16-chr", "a/b", "a b"] {
            assert!(egress.set_interface(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_service_keeps_its_own_and_takes_the_rest_from_the_flags() {
        let mut flags = bind_out(&["192.0.2.7"]).unwrap();
        flags.set_interface("wg0").unwrap();
        let own = bind_out(&["same"]).unwrap().or(&flags);
        assert_eq!((own.bind, own.interface.as_deref()), (Some(BindOut::Same), Some("wg0")));
        assert_eq!(Egress::default().or(&flags), flags);
    }
}
