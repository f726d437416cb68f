package slipway

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// OutboundPolicy says which hosts the outbound calls a repository configures
// (today the integration webhook of .slipway.yml) may reach: an admin's list
// (SLIPWAY_OUTBOUND_ALLOWED_HOSTS), never the payload's. The zero policy
// allows nothing. Safe for concurrent use once made.
type OutboundPolicy struct {
	names    []string       // lower case; "*.example.com" allows subdomains only
	prefixes []netip.Prefix // IPs and CIDRs, which also allow special addresses
}

// ParseOutboundPolicy reads a comma-separated list of entries: host names
// ("qa.example.com"), wildcards ("*.example.com": any subdomain, not the
// domain itself), IP addresses ("10.1.2.3", "::1") and CIDRs
// ("10.0.0.0/8"). A name allows the host whatever it resolves to except
// loopback, link-local (cloud metadata at 169.254.169.254 included),
// unspecified and multicast addresses; those are reached only through an IP
// or CIDR entry that contains them. EINVALID names a bad entry.
func ParseOutboundPolicy(list string) (*OutboundPolicy, error) {
	p := &OutboundPolicy{}
	for _, e := range strings.Split(list, ",") {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case e == "":
		case strings.Contains(e, "/"):
			pfx, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, Errorf(EINVALID, "%q is not a CIDR such as 10.0.0.0/8.", e)
			}
			p.prefixes = append(p.prefixes, pfx.Masked())
		default:
			if ip, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
				p.prefixes = append(p.prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
				continue
			}
			name := strings.TrimPrefix(e, "*.")
			if name == "" || strings.ContainsAny(name, "*:/ ") || strings.Contains(name, "..") {
				return nil, Errorf(EINVALID, "%q is not a host name, *.domain, IP address or CIDR.", e)
			}
			p.names = append(p.names, e)
		}
	}
	return p, nil
}

// allowedName reports whether host (lower case, no port) is listed by name.
func (p *OutboundPolicy) allowedName(host string) bool {
	if p == nil {
		return false
	}
	for _, n := range p.names {
		if d, ok := strings.CutPrefix(n, "*."); ok {
			if strings.HasSuffix(host, "."+d) {
				return true
			}
		} else if host == n {
			return true
		}
	}
	return false
}

// listedIP reports whether ip is inside an IP or CIDR entry.
func (p *OutboundPolicy) listedIP(ip netip.Addr) bool {
	if p == nil {
		return false
	}
	for _, pfx := range p.prefixes {
		if pfx.Contains(ip.Unmap()) {
			return true
		}
	}
	return false
}

// special reports whether ip is an address a name entry never reaches.
func special(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() ||
		ip.IsMulticast() || ip.IsInterfaceLocalMulticast()
}

// CheckURL returns EFORBIDDEN unless u is http(s) and its host is allowed:
// listed by name, or an IP inside an IP or CIDR entry. The message names the
// host and the setting, never more of the URL.
func (p *OutboundPolicy) CheckURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return Errorf(EFORBIDDEN, "Only http and https URLs are called, not %q.", u.Scheme)
	}
	host := strings.ToLower(u.Hostname())
	if ip, err := netip.ParseAddr(host); err == nil {
		if p.listedIP(ip) {
			return nil
		}
	} else if p.allowedName(host) {
		return nil
	}
	return Errorf(EFORBIDDEN, "Host %s is not in SLIPWAY_OUTBOUND_ALLOWED_HOSTS; ask an admin to add it, or call a host that is listed.", host)
}

// checkDial refuses a connection to address (ip:port, as the dialer resolved
// it) that the policy does not allow: a special address outside the IP and
// CIDR entries, whatever name led to it (so DNS cannot point a listed name at
// the worker's own loopback or the cloud metadata service).
func (p *OutboundPolicy) checkDial(address string) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("dialing %s: not an IP address", address)
	}
	if special(ip) && !p.listedIP(ip) {
		return Errorf(EFORBIDDEN, "The host resolves to %s, a loopback, link-local or other special address that only an IP or CIDR entry of SLIPWAY_OUTBOUND_ALLOWED_HOSTS allows.", ip)
	}
	return nil
}

// Client returns an HTTP client that calls only what the policy allows,
// checked on every request (CheckURL) and on every connection (the resolved
// address); it uses no proxy from the environment (a proxy would connect on
// its behalf, past these checks), follows at most 3 redirects and only to
// the same host, and gives up after timeout.
func (p *OutboundPolicy) Client(timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		return p.checkDial(address)
	}}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          10,
		IdleConnTimeout:       60 * time.Second,
	}
	return &http.Client{Timeout: timeout, Transport: checkedTransport{p: p, next: tr},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return Errorf(EFORBIDDEN, "More than 3 redirects.")
			}
			if !strings.EqualFold(req.URL.Host, via[0].URL.Host) {
				return Errorf(EFORBIDDEN, "A redirect to another host (%s) is not followed.", req.URL.Hostname())
			}
			return nil
		}}
}

// checkedTransport applies CheckURL to every request, redirects included.
type checkedTransport struct {
	p    *OutboundPolicy
	next http.RoundTripper
}

func (t checkedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.p.CheckURL(req.URL); err != nil {
		return nil, err
	}
	return t.next.RoundTrip(req)
}

// OutboundRefusal returns the policy's refusal inside err, if any: the
// message to show instead of the transport's error text.
func OutboundRefusal(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) && e.Code == EFORBIDDEN {
		return e, true
	}
	return nil, false
}
