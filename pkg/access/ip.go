package access

import (
	"errors"
	"net/netip"
	"strings"
)

// ParseAllowedIPs normalises a list of CIDRs or single addresses (IPv4 or
// IPv6) to canonical prefixes; a single address becomes a /32 or /128. An
// empty list allows any address.
func ParseAllowedIPs(list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		var p netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			p, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(s); err == nil && a.Zone() == "" {
				p = netip.PrefixFrom(a, a.BitLen())
			} else if err == nil {
				err = errors.New("zoned address")
			}
		}
		if err != nil || !p.IsValid() {
			return nil, errorf(KindInvalid, "invalid_allowed_ips", "%q is not an IP address or CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32)", s)
		}
		out = append(out, p.Masked().String())
	}
	return out, nil
}

// AllowsIP reports whether addr is inside one of the canonical prefixes in
// list, or list is empty. An IPv4-mapped IPv6 address counts as IPv4.
func AllowsIP(list []string, addr netip.Addr) bool {
	if len(list) == 0 {
		return true
	}
	addr = addr.Unmap()
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil && p.Contains(addr) {
			return true
		}
	}
	return false
}
