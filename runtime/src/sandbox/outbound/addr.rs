//! Which IP addresses a handler's outbound request may reach.
//!
//! A hostile handler picks the host names it asks for, and whoever runs the
//! DNS for a name picks the addresses it resolves to. So after resolving a
//! name the host checks every address with [`permitted`] and connects only
//! to addresses that pass: a name allowed by `allowed_outbound_hosts` that
//! resolves to the worker's loopback, the local network or a cloud metadata
//! service is refused all the same. The operator opens single addresses or
//! networks with `[sandbox] allow_private_networks` (default: none), parsed
//! by [`Network`].
//!
//! IPv6 has several ways to write an IPv4 address inside it (IPv4-mapped,
//! IPv4-compatible, NAT64, 6to4); each is judged by the IPv4 address it
//! carries, so `::ffff:127.0.0.1` is loopback like `127.0.0.1`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The forms a network may be written in, for error messages.
const NETWORK_FORMS: &str = "write an address or address/prefix, e.g. \"10.1.2.3\", \
     \"10.0.0.0/8\", \"fd00::/8\" or \"2001:db8::5/128\"";

/// Longest network text echoed back in an error; longer text is cut, so a
/// mistaken config value cannot flood the log.
const MAX_ECHO: usize = 60;

/// An IPv4 or IPv6 network: an address and a prefix length, with no host
/// bits set. A bare address is the network of that one address (/32 or
/// /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` lies in this network. An IPv4 network contains only
    /// IPv4 addresses and an IPv6 network only IPv6 ones; [`permitted`]
    /// also tries the IPv4 address an IPv6 one carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_v4(self.prefix);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_v6(self.prefix);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Network {
    type Err = NetworkError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |problem| NetworkError {
            text: echo(text),
            problem,
        };
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| error(NetworkProblem::NotAnAddress))?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                parse_prefix(p, max).ok_or_else(|| error(NetworkProblem::BadPrefix { max }))?
            }
        };
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(prefix))),
        };
        if network != addr {
            return Err(error(NetworkProblem::HostBitsSet {
                network: Network {
                    addr: network,
                    prefix,
                },
                single: Network { addr, prefix: max },
            }));
        }
        Ok(Network { addr, prefix })
    }
}

/// A prefix length in plain decimal (no sign, no leading zero) up to `max`.
fn parse_prefix(text: &str, max: u8) -> Option<u8> {
    let plain = !text.is_empty()
        && text.len() <= 3
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !plain {
        return None;
    }
    let prefix: u8 = text.parse().ok()?;
    (prefix <= max).then_some(prefix)
}

/// Escapes control characters and cuts long text, for echoing config text.
fn echo(text: &str) -> String {
    let mut cut: String = text.chars().take(MAX_ECHO).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// A network in `allow_private_networks` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text} is not a network: {problem}; {NETWORK_FORMS}")]
pub struct NetworkError {
    /// The text as given, quoted, escaped and cut to a readable length.
    text: String,
    problem: NetworkProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum NetworkProblem {
    #[error("not an IP address (IPv6 without brackets or zone)")]
    NotAnAddress,
    #[error("the prefix length must be a whole number from 0 to {max}")]
    BadPrefix { max: u8 },
    #[error(
        "the address has bits set beyond the prefix; \
         did you mean \"{network}\", or \"{single}\" for the one address?"
    )]
    HostBitsSet { network: Network, single: Network },
}

/// Why an address may not be reached: the special-purpose range it is in.
/// An IPv6 address carrying an IPv4 address is reported by the IPv4 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prohibited {
    /// 0.0.0.0/8: "this network"; 0.0.0.0 reaches the worker itself.
    ThisNetwork,
    /// 10.0.0.0/8.
    Private10,
    /// 100.64.0.0/10.
    SharedAddressSpace,
    /// 127.0.0.0/8.
    Loopback,
    /// 169.254.0.0/16, where 169.254.169.254 is the metadata service of
    /// most clouds (credentials of the machine's role).
    LinkLocal,
    /// 172.16.0.0/12.
    Private172,
    /// 192.0.0.0/24.
    IetfProtocolAssignments,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24.
    Documentation,
    /// 192.88.99.0/24.
    Relay6to4,
    /// 192.168.0.0/16.
    Private192,
    /// 198.18.0.0/15.
    Benchmarking,
    /// 224.0.0.0/4.
    Multicast,
    /// 240.0.0.0/4, including the broadcast address 255.255.255.255.
    Reserved,
    /// `::`.
    Unspecified6,
    /// `::1`.
    Loopback6,
    /// fc00::/7, where fd00:ec2::254 is a cloud metadata service.
    UniqueLocal6,
    /// fe80::/10.
    LinkLocal6,
    /// fec0::/10.
    SiteLocal6,
    /// ff00::/8.
    Multicast6,
    /// 2001:db8::/32 and 3fff::/20.
    Documentation6,
    /// 100::/64.
    Discard6,
    /// 2001::/23, including Teredo 2001::/32.
    IetfProtocolAssignments6,
    /// 64:ff9b:1::/48.
    LocalNat64,
    /// Anything else outside 2000::/3, the only IPv6 space given out for
    /// global unicast.
    NotGlobalUnicast6,
}

impl fmt::Display for Prohibited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Prohibited::ThisNetwork => "\"this network\" 0.0.0.0/8",
            Prohibited::Private10 => "private network 10.0.0.0/8",
            Prohibited::SharedAddressSpace => {
                "shared address space (carrier-grade NAT) 100.64.0.0/10"
            }
            Prohibited::Loopback => "loopback 127.0.0.0/8",
            Prohibited::LinkLocal => "link-local 169.254.0.0/16 (includes cloud metadata services)",
            Prohibited::Private172 => "private network 172.16.0.0/12",
            Prohibited::IetfProtocolAssignments => "IETF protocol assignments 192.0.0.0/24",
            Prohibited::Documentation => {
                "documentation range (192.0.2.0/24, 198.51.100.0/24 or 203.0.113.0/24)"
            }
            Prohibited::Relay6to4 => "6to4 relay anycast 192.88.99.0/24",
            Prohibited::Private192 => "private network 192.168.0.0/16",
            Prohibited::Benchmarking => "benchmarking 198.18.0.0/15",
            Prohibited::Multicast => "multicast 224.0.0.0/4",
            Prohibited::Reserved => "reserved 240.0.0.0/4 (includes broadcast)",
            Prohibited::Unspecified6 => "unspecified address ::",
            Prohibited::Loopback6 => "loopback ::1",
            Prohibited::UniqueLocal6 => "unique-local fc00::/7 (includes cloud metadata services)",
            Prohibited::LinkLocal6 => "link-local fe80::/10",
            Prohibited::SiteLocal6 => "site-local fec0::/10",
            Prohibited::Multicast6 => "multicast ff00::/8",
            Prohibited::Documentation6 => "documentation range (2001:db8::/32 or 3fff::/20)",
            Prohibited::Discard6 => "discard-only 100::/64",
            Prohibited::IetfProtocolAssignments6 => {
                "IETF protocol assignments 2001::/23 (includes Teredo)"
            }
            Prohibited::LocalNat64 => "local-use NAT64 64:ff9b:1::/48",
            Prohibited::NotGlobalUnicast6 => "not global unicast (outside 2000::/3)",
        })
    }
}

/// The IPv4 address an IPv6 address carries, if it is written in one of the
/// forms that do: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`
/// (but `::` and `::1` are themselves), NAT64 `64:ff9b::a.b.c.d` and 6to4
/// `2002:aabb:ccdd::/48`.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let mapped = bits >> 32 == 0xffff;
    let compatible = bits >> 32 == 0 && bits > 1;
    let nat64 = bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000;
    if mapped || compatible || nat64 {
        Some(Ipv4Addr::from(bits as u32))
    } else if bits >> 112 == 0x2002 {
        Some(Ipv4Addr::from((bits >> 80) as u32))
    } else {
        None
    }
}

/// The address the host judges `ip` by: the IPv4 address an IPv6 address
/// carries, or `ip` itself.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The special-purpose range `ip` is in, or None if it is globally
/// routable and a handler may reach it.
pub fn classify(ip: IpAddr) -> Option<Prohibited> {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Whether `bits` lies in the network `net`/`prefix` (all as integers).
fn in_v4(bits: u32, net: u32, prefix: u8) -> bool {
    bits & mask_v4(prefix) == net
}

fn in_v6(bits: u128, net: u128, prefix: u8) -> bool {
    bits & mask_v6(prefix) == net
}

fn classify_v4(ip: Ipv4Addr) -> Option<Prohibited> {
    use Prohibited::*;
    const RANGES: &[(u32, u8, Prohibited)] = &[
        (0x0000_0000, 8, ThisNetwork),
        (0x0a00_0000, 8, Private10),
        (0x6440_0000, 10, SharedAddressSpace),
        (0x7f00_0000, 8, Loopback),
        (0xa9fe_0000, 16, LinkLocal),
        (0xac10_0000, 12, Private172),
        (0xc000_0000, 24, IetfProtocolAssignments),
        (0xc000_0200, 24, Documentation),
        (0xc058_6300, 24, Relay6to4),
        (0xc0a8_0000, 16, Private192),
        (0xc612_0000, 15, Benchmarking),
        (0xc633_6400, 24, Documentation),
        (0xcb00_7100, 24, Documentation),
        (0xe000_0000, 4, Multicast),
        (0xf000_0000, 4, Reserved),
    ];
    let bits = u32::from(ip);
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(bits, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Prohibited> {
    use Prohibited::*;
    const RANGES: &[(u128, u8, Prohibited)] = &[
        (0, 128, Unspecified6),
        (1, 128, Loopback6),
        (0xfc00 << 112, 7, UniqueLocal6),
        (0xfe80 << 112, 10, LinkLocal6),
        (0xfec0 << 112, 10, SiteLocal6),
        (0xff00 << 112, 8, Multicast6),
        (0x2001_0db8 << 96, 32, Documentation6),
        (0x3fff << 112, 20, Documentation6),
        (0x0100 << 112, 64, Discard6),
        (0x2001 << 112, 23, IetfProtocolAssignments6),
        (0x0064_ff9b_0001 << 80, 48, LocalNat64),
    ];
    let bits = u128::from(ip);
    let special = RANGES
        .iter()
        .find(|(net, prefix, _)| in_v6(bits, *net, *prefix))
        .map(|(_, _, why)| *why);
    special.or_else(|| (!in_v6(bits, 0x2000 << 112, 3)).then_some(NotGlobalUnicast6))
}

/// Whether a handler may connect to `ip`: Ok if it is globally routable or
/// an operator listed a network holding it in `allow_private_networks`
/// (`allow`), else the range that forbids it. A listed network is matched
/// against the address as given and against the IPv4 address it carries,
/// so `10.1.2.3/32` also admits `::ffff:10.1.2.3`.
pub fn permitted(ip: IpAddr, allow: &[Network]) -> Result<(), Prohibited> {
    let Some(why) = classify(ip) else {
        return Ok(());
    };
    let canonical = canonical(ip);
    if allow
        .iter()
        .any(|net| net.contains(ip) || net.contains(canonical))
    {
        Ok(())
    } else {
        Err(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address parses")
    }

    fn net(text: &str) -> Network {
        text.parse().expect("test network parses")
    }

    /// Every IPv4 range: its first and last address inside, and the
    /// addresses just outside it either side (None when that neighbour is
    /// public, or the neighbouring range when they touch).
    #[test]
    fn ipv4_range_boundaries() {
        use Prohibited::*;
        let table: &[(&str, Option<Prohibited>)] = &[
            ("0.0.0.0", Some(ThisNetwork)),
            ("0.255.255.255", Some(ThisNetwork)),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("10.0.0.0", Some(Private10)),
            ("10.255.255.255", Some(Private10)),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("100.128.0.0", None),
            ("126.255.255.255", None),
            ("127.0.0.0", Some(Loopback)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.255", Some(Loopback)),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("169.254.0.0", Some(LinkLocal)),
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.255.255", Some(LinkLocal)),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some(Private172)),
            ("172.31.255.255", Some(Private172)),
            ("172.32.0.0", None),
            ("191.255.255.255", None),
            ("192.0.0.0", Some(IetfProtocolAssignments)),
            ("192.0.0.255", Some(IetfProtocolAssignments)),
            ("192.0.1.0", None),
            ("192.0.1.255", None),
            ("192.0.2.0", Some(Documentation)),
            ("192.0.2.255", Some(Documentation)),
            ("192.0.3.0", None),
            ("192.88.98.255", None),
            ("192.88.99.0", Some(Relay6to4)),
            ("192.88.99.255", Some(Relay6to4)),
            ("192.88.100.0", None),
            ("192.167.255.255", None),
            ("192.168.0.0", Some(Private192)),
            ("192.168.255.255", Some(Private192)),
            ("192.169.0.0", None),
            ("198.17.255.255", None),
            ("198.18.0.0", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("198.20.0.0", None),
            ("198.51.99.255", None),
            ("198.51.100.0", Some(Documentation)),
            ("198.51.100.255", Some(Documentation)),
            ("198.51.101.0", None),
            ("203.0.112.255", None),
            ("203.0.113.0", Some(Documentation)),
            ("203.0.113.255", Some(Documentation)),
            ("203.0.114.0", None),
            ("223.255.255.255", None),
            ("224.0.0.0", Some(Multicast)),
            ("239.255.255.255", Some(Multicast)),
            ("240.0.0.0", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("255.255.255.255", Some(Reserved)),
        ];
        for (addr, want) in table {
            assert_eq!(classify(ip(addr)), *want, "{addr}");
        }
    }

    #[test]
    fn ipv6_range_boundaries() {
        use Prohibited::*;
        let table: &[(&str, Option<Prohibited>)] = &[
            ("::", Some(Unspecified6)),
            ("::1", Some(Loopback6)),
            (
                "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(NotGlobalUnicast6),
            ),
            ("fc00::", Some(UniqueLocal6)),
            ("fd00:ec2::254", Some(UniqueLocal6)),
            (
                "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(UniqueLocal6),
            ),
            ("fe00::", Some(NotGlobalUnicast6)),
            (
                "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(NotGlobalUnicast6),
            ),
            ("fe80::", Some(LinkLocal6)),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(LinkLocal6)),
            ("fec0::", Some(SiteLocal6)),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(SiteLocal6)),
            ("ff00::", Some(Multicast6)),
            ("ff02::1", Some(Multicast6)),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(Multicast6)),
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:db8::", Some(Documentation6)),
            (
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(Documentation6),
            ),
            ("2001:db9::", None),
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("3fff::", Some(Documentation6)),
            (
                "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(Documentation6),
            ),
            ("3fff:1000::", None),
            (
                "ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(NotGlobalUnicast6),
            ),
            ("100::", Some(Discard6)),
            ("100::ffff:ffff:ffff:ffff", Some(Discard6)),
            ("100:0:0:1::", Some(NotGlobalUnicast6)),
            ("2000::", None),
            ("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001::", Some(IetfProtocolAssignments6)),
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                Some(IetfProtocolAssignments6),
            ),
            (
                "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(IetfProtocolAssignments6),
            ),
            ("2001:200::", None),
            (
                "64:ff9b:0:ffff:ffff:ffff:ffff:ffff",
                Some(NotGlobalUnicast6),
            ),
            ("64:ff9b:1::", Some(LocalNat64)),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Some(LocalNat64)),
            ("64:ff9b:2::", Some(NotGlobalUnicast6)),
            ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("4000::", Some(NotGlobalUnicast6)),
            ("2606:4700::1111", None),
            ("2a00:1450:4001::200e", None),
        ];
        for (addr, want) in table {
            assert_eq!(classify(ip(addr)), *want, "{addr}");
        }
    }

    #[test]
    fn metadata_services_are_prohibited() {
        assert_eq!(classify(ip("169.254.169.254")), Some(Prohibited::LinkLocal));
        assert_eq!(
            classify(ip("fd00:ec2::254")),
            Some(Prohibited::UniqueLocal6)
        );
        assert!(Prohibited::LinkLocal.to_string().contains("metadata"));
        assert!(Prohibited::UniqueLocal6.to_string().contains("metadata"));
    }

    #[test]
    fn public_addresses_are_not_prohibited() {
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
        ] {
            assert_eq!(classify(ip(addr)), None, "{addr}");
            assert_eq!(permitted(ip(addr), &[]), Ok(()), "{addr}");
        }
    }

    /// Each IPv6 form carrying an IPv4 address, for loopback, a private
    /// address and a public one.
    #[test]
    fn embedded_ipv4_forms_are_judged_by_the_ipv4_address() {
        let forms: &[(&str, Option<Prohibited>)] = &[
            ("::ffff:127.0.0.1", Some(Prohibited::Loopback)),
            ("::ffff:7f00:1", Some(Prohibited::Loopback)),
            ("::127.0.0.1", Some(Prohibited::Loopback)),
            ("64:ff9b::127.0.0.1", Some(Prohibited::Loopback)),
            ("64:ff9b::7f00:1", Some(Prohibited::Loopback)),
            ("2002:7f00:1::", Some(Prohibited::Loopback)),
            (
                "2002:7f00:1:ffff:ffff:ffff:ffff:ffff",
                Some(Prohibited::Loopback),
            ),
            ("::ffff:10.0.0.1", Some(Prohibited::Private10)),
            ("::ffff:a00:1", Some(Prohibited::Private10)),
            ("::10.0.0.1", Some(Prohibited::Private10)),
            ("64:ff9b::10.0.0.1", Some(Prohibited::Private10)),
            ("2002:a00:1::1", Some(Prohibited::Private10)),
            ("::ffff:169.254.169.254", Some(Prohibited::LinkLocal)),
            ("::ffff:0.0.0.0", Some(Prohibited::ThisNetwork)),
            ("::0.0.0.2", Some(Prohibited::ThisNetwork)),
            ("::ffff:8.8.8.8", None),
            ("::8.8.8.8", None),
            ("64:ff9b::8.8.8.8", None),
            ("2002:808:808::1", None),
        ];
        for (addr, want) in forms {
            assert_eq!(classify(ip(addr)), *want, "{addr}");
        }
        // `::` and `::1` are IPv6's own, not IPv4-compatible 0.0.0.0 / 0.0.0.1.
        assert_eq!(classify(ip("::")), Some(Prohibited::Unspecified6));
        assert_eq!(classify(ip("::1")), Some(Prohibited::Loopback6));
        // Just outside the NAT64 and 6to4 prefixes nothing is unwrapped.
        assert_eq!(
            classify(ip("64:ff9a:ffff:ffff:ffff:ffff:808:808")),
            Some(Prohibited::NotGlobalUnicast6)
        );
        assert_eq!(classify(ip("2003::7f00:1")), None);
        assert_eq!(classify(ip("2001:ffff::7f00:1")), None);
    }

    #[test]
    fn networks_parse() {
        let table: &[(&str, &str)] = &[
            ("10.1.2.3", "10.1.2.3/32"),
            ("10.1.2.3/32", "10.1.2.3/32"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("fd00::/8", "fd00::/8"),
            ("fd00:ec2::254", "fd00:ec2::254/128"),
            ("::ffff:10.1.2.3/128", "::ffff:10.1.2.3/128"),
            ("::/0", "::/0"),
        ];
        for (text, shown) in table {
            assert_eq!(net(text).to_string(), *shown, "{text}");
        }
    }

    #[test]
    fn bad_networks_are_refused_with_the_reason() {
        let table: &[(&str, &str)] = &[
            ("", "not an IP address"),
            ("garbage", "not an IP address"),
            ("10.0.0", "not an IP address"),
            ("010.0.0.1", "not an IP address"),
            (" 10.0.0.1", "not an IP address"),
            ("[fd00::]/8", "not an IP address"),
            ("fe80::1%eth0", "not an IP address"),
            ("10.0.0.0/", "from 0 to 32"),
            ("10.0.0.0/33", "from 0 to 32"),
            ("10.0.0.0/+8", "from 0 to 32"),
            ("10.0.0.0/08", "from 0 to 32"),
            ("10.0.0.0/8/8", "from 0 to 32"),
            ("10.0.0.0/ 8", "from 0 to 32"),
            ("10.0.0.0/256", "from 0 to 32"),
            ("fd00::/129", "from 0 to 128"),
            ("fd00::/-1", "from 0 to 128"),
            (
                "10.0.0.1/8",
                "did you mean \"10.0.0.0/8\", or \"10.0.0.1/32\" for the one address?",
            ),
            ("172.16.5.0/12", "did you mean \"172.16.0.0/12\""),
            ("fd00::1/8", "did you mean \"fd00::/8\", or \"fd00::1/128\""),
        ];
        for (text, reason) in table {
            let err = text.parse::<Network>().expect_err(text).to_string();
            assert!(err.contains(reason), "{text}: {err}");
            assert!(
                err.contains("e.g. \"10.1.2.3\", \"10.0.0.0/8\""),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn network_errors_echo_text_escaped_and_cut() {
        let err = "10.0.0.1\n/8"
            .parse::<Network>()
            .expect_err("newline")
            .to_string();
        assert!(
            err.starts_with("\"10.0.0.1\\n/8\" is not a network"),
            "{err}"
        );
        let long = "9".repeat(10_000);
        let err = long.parse::<Network>().expect_err("long").to_string();
        assert!(err.len() < 300, "{err}");
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let n = net("10.0.0.0/8");
        assert!(n.contains(ip("10.0.0.0")));
        assert!(n.contains(ip("10.255.255.255")));
        assert!(!n.contains(ip("11.0.0.0")));
        assert!(!n.contains(ip("9.255.255.255")));
        assert!(!n.contains(ip("::ffff:10.0.0.1")));
        let one = net("10.1.2.3");
        assert!(one.contains(ip("10.1.2.3")));
        assert!(!one.contains(ip("10.1.2.4")));
        assert!(!one.contains(ip("10.1.2.2")));
        let v6 = net("fd00::/8");
        assert!(v6.contains(ip("fd00::")));
        assert!(v6.contains(ip("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!v6.contains(ip("fc00::1")));
        assert!(!v6.contains(ip("fe00::")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(net("::/0").contains(ip("::1")));
    }

    #[test]
    fn permitted_honours_listed_networks() {
        let allow = [net("10.1.2.3/32"), net("fd00:1::/32")];
        assert_eq!(permitted(ip("10.1.2.3"), &allow), Ok(()));
        assert_eq!(permitted(ip("::ffff:10.1.2.3"), &allow), Ok(()));
        assert_eq!(permitted(ip("64:ff9b::10.1.2.3"), &allow), Ok(()));
        assert_eq!(
            permitted(ip("10.1.2.4"), &allow),
            Err(Prohibited::Private10)
        );
        assert_eq!(
            permitted(ip("::ffff:10.1.2.4"), &allow),
            Err(Prohibited::Private10)
        );
        assert_eq!(permitted(ip("fd00:1::5"), &allow), Ok(()));
        assert_eq!(
            permitted(ip("fd00:2::5"), &allow),
            Err(Prohibited::UniqueLocal6)
        );
        assert_eq!(
            permitted(ip("127.0.0.1"), &allow),
            Err(Prohibited::Loopback)
        );
        assert_eq!(
            permitted(ip("169.254.169.254"), &[]),
            Err(Prohibited::LinkLocal)
        );
        // A network listed in its IPv6-mapped form admits that form only
        // through the address as given.
        let mapped = [net("::ffff:10.1.2.3/128")];
        assert_eq!(permitted(ip("::ffff:10.1.2.3"), &mapped), Ok(()));
        assert_eq!(
            permitted(ip("10.1.2.3"), &mapped),
            Err(Prohibited::Private10)
        );
    }
}
