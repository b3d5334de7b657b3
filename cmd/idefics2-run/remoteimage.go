package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

// Limits of remote image fetches besides the image byte limit.
const (
	remoteMaxRedirects   = 3
	remoteDefaultTimeout = 20 * time.Second
)

// remoteFlags are the options that let serve and batch fetch http(s) image URLs.
type remoteFlags struct {
	allow    bool
	hosts    string
	timeoutS int
}

func (f *remoteFlags) register(fs *cli.FlagSet) {
	fs.Bool(&f.allow, "allow-remote-images", "fetch http(s) image URLs (off by default; loopback, link-local and private addresses stay refused)")
	fs.String(&f.hosts, "allow-remote-hosts", "with --allow-remote-images, also allow these hosts on loopback, link-local or private addresses (comma-separated `LIST` of host names, IPs or CIDR ranges)")
	fs.Int(&f.timeoutS, "remote-image-timeout", fmt.Sprintf("seconds one remote image may take, redirects included (default %d)", int(remoteDefaultTimeout/time.Second)))
}

// fetcher checks the options and returns the fetcher they ask for (nil: remote images stay refused).
func (f *remoteFlags) fetcher(cmd string, fs *cli.FlagSet, maxBytes int) (*remoteFetcher, error) {
	if !f.allow {
		for _, name := range []string{"allow-remote-hosts", "remote-image-timeout"} {
			if fs.Set(name) {
				return nil, cli.Usagef("%s: --%s needs --allow-remote-images", cmd, name)
			}
		}
		return nil, nil
	}
	timeout := remoteDefaultTimeout
	if fs.Set("remote-image-timeout") {
		if f.timeoutS <= 0 || f.timeoutS > 3600 {
			return nil, cli.Usagef("%s: --remote-image-timeout %d: want 1 to 3600 seconds", cmd, f.timeoutS)
		}
		timeout = time.Duration(f.timeoutS) * time.Second
	}
	allow, err := parseRemoteHosts(f.hosts)
	if err != nil {
		return nil, cli.Usagef("%s: %v", cmd, err)
	}
	return newRemoteFetcher(allow, maxBytes, timeout), nil
}

// remoteAllow is the --allow-remote-hosts list: host names (lower case) and address ranges that may be fetched even
// on loopback, link-local or private addresses.
type remoteAllow struct {
	names    []string
	prefixes []netip.Prefix
}

// parseRemoteHosts reads --allow-remote-hosts: comma-separated host names, IP addresses or CIDR ranges.
func parseRemoteHosts(list string) (remoteAllow, error) {
	var a remoteAllow
	for _, h := range strings.Split(list, ",") {
		h = strings.TrimSpace(h)
		switch {
		case h == "":
			continue
		case strings.Contains(h, "/"):
			p, err := netip.ParsePrefix(h)
			if err != nil {
				return a, fmt.Errorf("--allow-remote-hosts %q: not a CIDR range: %v", h, err)
			}
			a.prefixes = append(a.prefixes, p.Masked())
		default:
			if ip, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
				a.prefixes = append(a.prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
				continue
			}
			if strings.ContainsAny(h, ":@?#* ") || strings.HasPrefix(h, ".") || strings.HasSuffix(h, ".") {
				return a, fmt.Errorf("--allow-remote-hosts %q: want a host name, an IP address or a CIDR range (no scheme or port)", h)
			}
			a.names = append(a.names, strings.ToLower(h))
		}
	}
	return a, nil
}

func (a remoteAllow) hasName(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, n := range a.names {
		if n == host {
			return true
		}
	}
	return false
}

func (a remoteAllow) hasAddr(ip netip.Addr) bool {
	for _, p := range a.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// refusedAddr says why ip may not be fetched unless allowed ("" when it is a public address): loopback, private
// (RFC 1918, RFC 4193), link-local, shared (RFC 6598), unspecified, multicast and other non-global ranges.
func refusedAddr(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsMulticast() || ip.IsInterfaceLocalMulticast():
		return "multicast"
	case netip.MustParsePrefix("100.64.0.0/10").Contains(ip):
		return "shared (carrier-grade NAT)"
	case ip.Is4() && (netip.MustParsePrefix("0.0.0.0/8").Contains(ip) || netip.MustParsePrefix("240.0.0.0/4").Contains(ip)):
		return "reserved"
	}
	return ""
}

// remoteFetcher fetches image URLs with limits: byte size, total time, redirects, an image/* content type, and
// only public addresses unless allowed. It connects to the addresses it checked (names are resolved once, by the
// fetcher), and ignores proxy settings, which would hide the destination.
type remoteFetcher struct {
	client   *http.Client
	allow    remoteAllow
	maxBytes int
	timeout  time.Duration
	resolver *net.Resolver
}

func newRemoteFetcher(allow remoteAllow, maxBytes int, timeout time.Duration) *remoteFetcher {
	f := &remoteFetcher{allow: allow, maxBytes: maxBytes, timeout: timeout, resolver: net.DefaultResolver}
	dialer := &net.Dialer{Timeout: timeout}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ip, err := f.checkHost(ctx, host)
			if err != nil {
				return nil, err
			}
			return dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		},
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
	}
	f.client = &http.Client{Transport: tr, Timeout: timeout, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) > remoteMaxRedirects {
			return fmt.Errorf("more than %d redirects", remoteMaxRedirects)
		}
		if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
			return fmt.Errorf("redirect to a %s: URL", req.URL.Scheme)
		}
		return nil
	}}
	return f
}

// remoteAddrError is a destination refused by the address rules.
type remoteAddrError struct{ msg string }

func (e *remoteAddrError) Error() string { return e.msg }

// checkHost resolves host and returns the address to connect to, or an error when it is refused.
func (f *remoteFetcher) checkHost(ctx context.Context, host string) (netip.Addr, error) {
	named := f.allow.hasName(host)
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip.Unmap()}
	} else {
		ips, err := f.resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return netip.Addr{}, err
		}
		for _, ip := range ips {
			addrs = append(addrs, ip.Unmap())
		}
	}
	for _, ip := range addrs {
		if why := refusedAddr(ip); why != "" && !named && !f.allow.hasAddr(ip) {
			return netip.Addr{}, &remoteAddrError{fmt.Sprintf("host %s is a %s address (%s); allow it with --allow-remote-hosts", host, why, ip)}
		}
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("host %s has no address", host)
	}
	return addrs[0], nil
}

// fetch downloads the image at ref (an http or https URL).
func (f *remoteFetcher) fetch(ctx context.Context, ref string) (runner.Image, error) {
	u, err := url.Parse(ref)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return runner.Image{}, badRequest("image url %s: not a valid http(s) URL", shortRef(ref))
	}
	if u.User != nil {
		return runner.Image{}, badRequest("image url %s: credentials in the URL are refused", shortRef(redacted(u)))
	}
	name := redacted(u)
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return runner.Image{}, badRequest("image url %s: %v", shortRef(name), err)
	}
	req.Header.Set("Accept", "image/*")
	resp, err := f.client.Do(req)
	if err != nil {
		var ae *remoteAddrError
		switch {
		case errors.As(err, &ae):
			return runner.Image{}, badRequest("image url %s: %s", shortRef(name), ae.msg)
		case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
			return runner.Image{}, badRequest("image url %s: no answer within %s", shortRef(name), f.timeout)
		}
		return runner.Image{}, badRequest("image url %s: %v", shortRef(name), unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return runner.Image{}, badRequest("image url %s: HTTP status %d", shortRef(name), resp.StatusCode)
	}
	ct := resp.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !strings.HasPrefix(mt, "image/") {
		return runner.Image{}, badRequest("image url %s: content type %q is not an image", shortRef(name), ct)
	}
	if resp.ContentLength > int64(f.maxBytes) {
		return runner.Image{}, tooLarge("image url %s: %d bytes, more than the limit of %d", shortRef(name), resp.ContentLength, f.maxBytes)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, int64(f.maxBytes)+1))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			return runner.Image{}, badRequest("image url %s: not received within %s", shortRef(name), f.timeout)
		}
		return runner.Image{}, badRequest("image url %s: %v", shortRef(name), err)
	}
	if len(b) > f.maxBytes {
		return runner.Image{}, tooLarge("image url %s: more than the limit of %d bytes", shortRef(name), f.maxBytes)
	}
	return runner.Image{Name: name, Data: b}, nil
}

// redacted is the URL without its query, which may carry tokens, for messages.
func redacted(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.Fragment = nil, "", ""
	return c.String()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// unwrapURLError drops *url.Error's "Get URL:" prefix, the URL being named already.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// isImageURL reports whether ref is an http or https URL.
func isImageURL(ref string) bool {
	return strings.HasPrefix(ref, "http://") || strings.HasPrefix(ref, "https://")
}

// readImagesFrom is readImages where --allow-remote-images lets --image name http(s) URLs: each URL is fetched with
// f (nil: URLs are refused, naming the option), the rest read as files or standard input.
func readImagesFrom(ctx context.Context, paths []string, stdin io.Reader, f *remoteFetcher) ([]runner.Image, error) {
	var out []runner.Image
	var local []string
	var at []int
	for _, p := range paths {
		if !isImageURL(p) {
			local = append(local, p)
			at = append(at, len(out))
			out = append(out, runner.Image{})
			continue
		}
		img, err := loadImageURL(ctx, p, f)
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	imgs, err := readImages(local, stdin)
	if err != nil {
		return nil, err
	}
	for i, img := range imgs {
		out[at[i]] = img
	}
	return out, nil
}

// loadImageURL fetches the --image or /image URL ref with f; a fetch error is a usage error naming the URL.
func loadImageURL(ctx context.Context, ref string, f *remoteFetcher) (runner.Image, error) {
	if f == nil {
		return runner.Image{}, cli.Usagef("--image %s: URLs are fetched only with --allow-remote-images (or download the file first)", ref)
	}
	img, err := f.fetch(ctx, ref)
	if err != nil {
		return runner.Image{}, cli.Usagef("%v", err)
	}
	return img, nil
}
