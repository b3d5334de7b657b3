package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

func TestRefusedAddr(t *testing.T) {
	for _, tc := range []struct {
		ip, why string
	}{
		{"127.0.0.1", "loopback"}, {"127.5.6.7", "loopback"}, {"::1", "loopback"}, {"::ffff:127.0.0.1", "loopback"},
		{"10.1.2.3", "private"}, {"172.16.0.1", "private"}, {"172.31.255.255", "private"}, {"192.168.1.1", "private"},
		{"fc00::1", "private"}, {"fd12::1", "private"},
		{"169.254.169.254", "link-local"}, {"fe80::1", "link-local"},
		{"0.0.0.0", "unspecified"}, {"::", "unspecified"}, {"224.0.0.1", "link-local"}, {"239.1.2.3", "multicast"},
		{"100.64.0.1", "shared (carrier-grade NAT)"}, {"0.1.2.3", "reserved"}, {"250.0.0.1", "reserved"},
		{"8.8.8.8", ""}, {"172.32.0.1", ""}, {"2001:4860:4860::8888", ""}, {"93.184.215.14", ""},
	} {
		if got := refusedAddr(netip.MustParseAddr(tc.ip)); got != tc.why {
			t.Errorf("%s: %q, want %q", tc.ip, got, tc.why)
		}
	}
}

func TestParseRemoteHosts(t *testing.T) {
	a, err := parseRemoteHosts("LocalHost, 127.0.0.1, 10.0.0.0/8, [::1], images.internal")
	if err != nil {
		t.Fatal(err)
	}
	if !a.hasName("localhost") || !a.hasName("images.internal.") || a.hasName("example.com") {
		t.Errorf("names %v", a.names)
	}
	for ip, want := range map[string]bool{"127.0.0.1": true, "127.0.0.2": false, "10.9.8.7": true, "::1": true, "192.168.0.1": false} {
		if got := a.hasAddr(netip.MustParseAddr(ip)); got != want {
			t.Errorf("%s: allowed %v, want %v", ip, got, want)
		}
	}
	for _, bad := range []string{"http://localhost", "localhost:8080", "10.0.0.0/33", "*.example.com", "user@host", ".example"} {
		if _, err := parseRemoteHosts(bad); err == nil || !strings.Contains(err.Error(), "--allow-remote-hosts") {
			t.Errorf("%q: %v, want an error naming --allow-remote-hosts", bad, err)
		}
	}
}

// FuzzRemoteHosts: any --allow-remote-hosts value gives an error or a list, never a panic; a list never allows a
// name with a scheme or port.
func FuzzRemoteHosts(f *testing.F) {
	for _, s := range []string{"", "localhost", "127.0.0.1,10.0.0.0/8", "[::1]", "a, ,b", "1.2.3.4/", "::ffff:1.2.3.4/120"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseRemoteHosts(s)
		if err != nil {
			return
		}
		for _, n := range a.names {
			if strings.ContainsAny(n, ":/@") {
				t.Fatalf("%q: name %q", s, n)
			}
		}
	})
}

// imageServer is a loopback HTTP server with the demo picture and misbehaving routes.
func imageServer(t *testing.T) (*httptest.Server, []byte) {
	t.Helper()
	png, err := os.ReadFile(demoPNG("demo_00.png"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/demo.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(png)
	})
	mux.HandleFunc("/text", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte("<html></html>"))
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Content-Length", "5000")
		w.Write(bytes.Repeat([]byte{1}, 5000))
	})
	mux.HandleFunc("/big-chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		for range 5 {
			w.Write(bytes.Repeat([]byte{1}, 1000))
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/missing", http.NotFound)
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/demo.png", http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	// A redirect from the host's name to its address: allowed by name, the address is not.
	mux.HandleFunc("/to-ip", func(w http.ResponseWriter, r *http.Request) {
		_, port, _ := strings.Cut(r.Host, ":")
		http.Redirect(w, r, "http://127.0.0.1:"+port+"/demo.png", http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, png
}

// TestRemoteFetch runs the fetcher against a loopback server that the tests allow explicitly, and the limits.
func TestRemoteFetch(t *testing.T) {
	srv, png := imageServer(t)
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	byIP := "http://127.0.0.1:" + port
	byName := "http://localhost:" + port
	fetcher := func(hosts string, maxBytes int, timeout time.Duration) *remoteFetcher {
		a, err := parseRemoteHosts(hosts)
		if err != nil {
			t.Fatal(err)
		}
		return newRemoteFetcher(a, maxBytes, timeout)
	}
	for _, tc := range []struct {
		name, hosts, url string
		maxBytes         int
		timeout          time.Duration
		status           int // 0: fetched
		want             string
	}{
		{"loopback refused", "", byIP + "/demo.png", 1 << 20, time.Second, 400, "host 127.0.0.1 is a loopback address (127.0.0.1); allow it with --allow-remote-hosts"},
		{"loopback name refused", "", byName + "/demo.png", 1 << 20, time.Second, 400, "host localhost is a loopback address"},
		{"allowed by IP", "127.0.0.1", byIP + "/demo.png", 1 << 20, time.Second, 0, ""},
		{"allowed by range", "127.0.0.0/8", byIP + "/demo.png", 1 << 20, time.Second, 0, ""},
		{"allowed by name", "localhost", byName + "/demo.png", 1 << 20, time.Second, 0, ""},
		{"one redirect", "127.0.0.1", byIP + "/redirect", 1 << 20, time.Second, 0, ""},
		{"redirect to a refused address", "localhost", byName + "/to-ip", 1 << 20, time.Second, 400, "host 127.0.0.1 is a loopback address"},
		{"redirect loop", "127.0.0.1", byIP + "/loop", 1 << 20, time.Second, 400, "more than 3 redirects"},
		{"not an image", "127.0.0.1", byIP + "/text", 1 << 20, time.Second, 400, `content type "text/html; charset=utf-8" is not an image`},
		{"too large", "127.0.0.1", byIP + "/big", 4096, time.Second, 413, "5000 bytes, more than the limit of 4096"},
		{"too large without a length", "127.0.0.1", byIP + "/big-chunked", 4096, time.Second, 413, "more than the limit of 4096 bytes"},
		{"not found", "127.0.0.1", byIP + "/missing", 1 << 20, time.Second, 400, "HTTP status 404"},
		{"too slow", "127.0.0.1", byIP + "/slow", 1 << 20, 300 * time.Millisecond, 400, "within 300ms"},
		{"credentials", "127.0.0.1", "http://user:pw@127.0.0.1:" + port + "/demo.png", 1 << 20, time.Second, 400, "credentials in the URL are refused"},
		{"query kept out of messages", "", byIP + "/demo.png?token=secret", 1 << 20, time.Second, 400, "loopback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := fetcher(tc.hosts, tc.maxBytes, tc.timeout).fetch(t.Context(), tc.url)
			if tc.status == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(img.Data, png) {
					t.Errorf("got %d bytes, want the %d of demo_00.png", len(img.Data), len(png))
				}
				return
			}
			var re *requestError
			if !errors.As(err, &re) || re.status != tc.status || !strings.Contains(re.msg, tc.want) {
				t.Fatalf("got %v, want status %d with %q", err, tc.status, tc.want)
			}
			if strings.Contains(re.msg, "secret") || strings.Contains(re.msg, "pw@") {
				t.Errorf("message %q shows the URL's query or credentials", re.msg)
			}
		})
	}
}

// TestServeRemoteImage asks the server about an image given by URL on a loopback server it allows.
func TestServeRemoteImage(t *testing.T) {
	img, _ := imageServer(t)
	a, _ := parseRemoteHosts("127.0.0.1")
	_, url := startServer(t, "demo", func(c *serverConfig) { c.policy.remote = newRemoteFetcher(a, 1<<20, 5*time.Second) })
	body := fmt.Sprintf(`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":%q}},{"type":"text","text":%q}]}],"max_tokens":16}`,
		img.URL+"/demo.png", question)
	code, _, b := post(t, url+"/v1/chat/completions", body)
	if code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	var r chatResponse
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if got := *r.Choices[0].Message.Content; got != "A red circle." {
		t.Errorf("answer %q, want %q", got, "A red circle.")
	}
	// Without the fetcher (the default), URLs are refused, naming the option.
	_, url2 := startServer(t, "demo", nil)
	code, _, b = post(t, url2+"/v1/chat/completions", body)
	if code != 400 || !strings.Contains(string(b), "--allow-remote-images") {
		t.Errorf("default server: %d %s, want 400 naming --allow-remote-images", code, b)
	}
}

// TestRemoteFlagsBad checks the options' own errors (exit 2, before the model loads).
func TestRemoteFlagsBad(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "-m", "x.gguf", "--allow-remote-hosts", "localhost"}, "--allow-remote-hosts needs --allow-remote-images"},
		{[]string{"batch", "-m", "x.gguf", "--remote-image-timeout", "5"}, "--remote-image-timeout needs --allow-remote-images"},
		{[]string{"batch", "-m", "x.gguf", "--allow-remote-images", "--remote-image-timeout", "0"}, "--remote-image-timeout 0"},
		{[]string{"serve", "-m", "x.gguf", "--allow-remote-images", "--allow-remote-hosts", "http://x"}, `--allow-remote-hosts "http://x"`},
	} {
		code, _, errs := runCmd(t, "", tc.args...)
		noPanic(t, errs)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, %q; want 2 with %q", tc.args, code, errs, tc.want)
		}
	}
}

// TestCLIRemoteImage: one-shot --image and chat's --image and /image take URLs with --allow-remote-images (the
// loopback test server allowed explicitly), and refuse them without, naming the option.
func TestCLIRemoteImage(t *testing.T) {
	srv, _ := imageServer(t)
	u := srv.URL + "/demo.png"
	allow := []string{"--allow-remote-images", "--allow-remote-hosts", "127.0.0.1"}
	code, out, errs := runCmd(t, "", append(append(modelArgs(t, "demo"), allow...), "--image", u, "-p", question, "-n", "16")...)
	if code != 0 || strings.TrimSpace(out) != "A red circle." {
		t.Errorf("one-shot: exit %d, %q, %s", code, out, errs)
	}
	code, _, errs = runCmd(t, "", append(modelArgs(t, "demo"), "--image", u, "-p", question)...)
	if code != 2 || !strings.Contains(errs, "--allow-remote-images") {
		t.Errorf("one-shot without the option: exit %d, %q", code, errs)
	}
	code, _, errs = runCmd(t, "", append(append(modelArgs(t, "demo"), "--allow-remote-images"), "--image", u, "-p", question)...)
	if code != 2 || !strings.Contains(errs, "loopback address") {
		t.Errorf("one-shot, loopback not allowed: exit %d, %q", code, errs)
	}
	_, out, errs = runCmd(t, "/image "+u+"\n"+question+"\n/quit\n", append(append([]string{"chat", "-n", "16"}, modelArgs(t, "demo")...), allow...)...)
	if strings.TrimSpace(out) != "A red circle." {
		t.Errorf("chat /image URL: %q, %s", out, errs)
	}
	_, out, errs = runCmd(t, question+"\n/quit\n", append(append([]string{"chat", "-n", "16", "--image", u}, modelArgs(t, "demo")...), allow...)...)
	if strings.TrimSpace(out) != "A red circle." {
		t.Errorf("chat --image URL: %q, %s", out, errs)
	}
}
