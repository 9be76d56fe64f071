//! Which addresses a fetch may connect to. I/O-free: the resolver, the URL check and the
//! redirect loop all ask [`AddressPolicy::check`], so the rule lives in one place.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The operator's choice, applied to every address a fetch would connect to.
#[derive(Debug, Clone)]
pub(crate) struct AddressPolicy {
    pub allow_private_networks: bool,
    pub allowlist: Vec<IpNet>,
}

impl AddressPolicy {
    /// `Err(reason)` when connecting to `ip` is refused; the reason completes the sentence
    /// "… is …", e.g. "a private address".
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.allow_private_networks {
            return Ok(());
        }
        let canonical = ip.to_canonical();
        if self
            .allowlist
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
        {
            return Ok(());
        }
        match forbidden_reason(ip) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

/// Why `ip` is not a public unicast address, or `None` if it is one.
///
/// Deny by category rather than allow by registry: anything not plainly global is refused,
/// including forms that embed an IPv4 address (mapped, NAT64, 6to4) whose inner address
/// would be refused.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    // Order matters only where ranges nest (broadcast inside 240/4, unspecified inside 0/8).
    const RULES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 32, "an unspecified address"),
        ([0, 0, 0, 0], 8, "a \"this network\" address"),
        ([10, 0, 0, 0], 8, "a private address"),
        ([100, 64, 0, 0], 10, "a shared (carrier-grade NAT) address"),
        ([127, 0, 0, 0], 8, "a loopback address"),
        ([169, 254, 0, 0], 16, "a link-local address"),
        ([172, 16, 0, 0], 12, "a private address"),
        ([192, 0, 0, 0], 24, "a reserved (IETF protocol) address"),
        ([192, 0, 2, 0], 24, "a documentation address"),
        ([192, 88, 99, 0], 24, "a reserved (6to4 relay) address"),
        ([192, 168, 0, 0], 16, "a private address"),
        ([198, 18, 0, 0], 15, "a benchmarking address"),
        ([198, 51, 100, 0], 24, "a documentation address"),
        ([203, 0, 113, 0], 24, "a documentation address"),
        ([224, 0, 0, 0], 4, "a multicast address"),
        ([255, 255, 255, 255], 32, "a broadcast address"),
        ([240, 0, 0, 0], 4, "a reserved address"),
    ];
    RULES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    let bits = u128::from(ip);
    let in_net = |net: u128, prefix: u32| -> bool {
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix)
        };
        (bits & mask) == (net & mask)
    };

    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // ::ffff:a.b.c.d — the kernel connects to the IPv4 address itself.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    // NAT64 well-known prefix 64:ff9b::/96: a NAT64 gateway would connect to the embedded
    // IPv4 address, so judge that.
    if in_net(0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
        return forbidden_v4(Ipv4Addr::from((bits & 0xffff_ffff) as u32));
    }
    // 6to4 2002::/16 embeds an IPv4 address in bits 16..48.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        return forbidden_v4(v4);
    }
    if seg[0] & 0xff00 == 0xff00 {
        return Some("a multicast address");
    }
    if seg[0] & 0xfe00 == 0xfc00 {
        return Some("a private (unique local) address");
    }
    if seg[0] & 0xffc0 == 0xfe80 {
        return Some("a link-local address");
    }
    if seg[0] & 0xffc0 == 0xfec0 {
        return Some("a site-local address");
    }
    if in_net(0x2001_0db8 << 96, 32) || in_net(0x3fff << 112, 20) {
        return Some("a documentation address");
    }
    // 2001::/23 holds Teredo, ORCHID, AS112 and other protocol assignments: none is a web
    // server's address, and Teredo embeds an obfuscated IPv4 address.
    if in_net(0x2001 << 112, 23) {
        return Some("a reserved (IETF protocol) address");
    }
    // Global unicast is 2000::/3; everything else (IPv4-compatible ::/96, 64:ff9b:1::/48,
    // discard-only 100::/64, unassigned space) is not the public internet.
    if !in_net(0x2000 << 112, 3) {
        return Some("a reserved address");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &str) -> Option<&'static str> {
        forbidden_reason(s.parse().unwrap())
    }

    #[test]
    fn refuses_non_global_ipv4() {
        for (addr, want) in [
            ("127.0.0.1", "a loopback address"),
            ("127.255.0.9", "a loopback address"),
            ("10.1.2.3", "a private address"),
            ("172.16.0.1", "a private address"),
            ("172.31.255.255", "a private address"),
            ("192.168.1.1", "a private address"),
            ("169.254.169.254", "a link-local address"),
            ("100.64.0.1", "a shared (carrier-grade NAT) address"),
            ("100.127.255.255", "a shared (carrier-grade NAT) address"),
            ("0.0.0.0", "an unspecified address"),
            ("0.1.2.3", "a \"this network\" address"),
            ("224.0.0.1", "a multicast address"),
            ("239.255.255.250", "a multicast address"),
            ("255.255.255.255", "a broadcast address"),
            ("240.0.0.1", "a reserved address"),
            ("192.0.0.8", "a reserved (IETF protocol) address"),
            ("192.0.2.1", "a documentation address"),
            ("198.51.100.7", "a documentation address"),
            ("203.0.113.9", "a documentation address"),
            ("198.18.0.1", "a benchmarking address"),
            ("198.19.255.255", "a benchmarking address"),
        ] {
            assert_eq!(reason(addr), Some(want), "{addr}");
        }
    }

    #[test]
    fn allows_public_ipv4_next_to_forbidden_ranges() {
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "192.167.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "11.0.0.0",
            "126.255.255.255",
            "128.0.0.0",
        ] {
            assert_eq!(reason(addr), None, "{addr}");
        }
    }

    #[test]
    fn refuses_non_global_ipv6_and_embedded_ipv4() {
        for (addr, want) in [
            ("::1", "a loopback address"),
            ("::", "an unspecified address"),
            ("fc00::1", "a private (unique local) address"),
            ("fd12:3456::1", "a private (unique local) address"),
            ("fe80::1", "a link-local address"),
            ("fec0::1", "a site-local address"),
            ("ff02::1", "a multicast address"),
            ("2001:db8::1", "a documentation address"),
            ("3fff::1", "a documentation address"),
            ("2001::1", "a reserved (IETF protocol) address"),
            ("::ffff:127.0.0.1", "a loopback address"),
            ("::ffff:10.0.0.1", "a private address"),
            ("::ffff:169.254.169.254", "a link-local address"),
            ("::127.0.0.1", "a reserved address"),
            ("64:ff9b::10.0.0.1", "a private address"),
            ("64:ff9b:1::1", "a reserved address"),
            ("2002:7f00:1::", "a loopback address"),
            ("2002:c0a8:101::", "a private address"),
            ("100::1", "a reserved address"),
        ] {
            assert_eq!(reason(addr), Some(want), "{addr}");
        }
    }

    #[test]
    fn allows_public_ipv6() {
        for addr in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(reason(addr), None, "{addr}");
        }
    }

    #[test]
    fn policy_switches_and_allowlist() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let strict = AddressPolicy {
            allow_private_networks: false,
            allowlist: vec![],
        };
        assert_eq!(strict.check(ip), Err("a loopback address"));

        let open = AddressPolicy {
            allow_private_networks: true,
            allowlist: vec![],
        };
        assert_eq!(open.check(ip), Ok(()));

        let listed = AddressPolicy {
            allow_private_networks: false,
            allowlist: vec!["127.0.0.1/32".parse().unwrap()],
        };
        assert_eq!(listed.check(ip), Ok(()));
        // The mapped form of an allowlisted IPv4 address is the same host.
        assert_eq!(listed.check("::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(
            listed.check("127.0.0.2".parse().unwrap()),
            Err("a loopback address")
        );
    }
}
