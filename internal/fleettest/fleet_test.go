//go:build fleet

package fleettest

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const (
	requests  = 200 // sent through HAProxy
	clients   = 8   // at once
	termAfter = 50  // answers received before replica r1 gets SIGTERM
	maxTokens = 24
	question  = "What shape is in the picture?"
	// drainTimeout bounds r1's drain; its held requests take well under a second each on the demo model.
	drainTimeout = 60 * time.Second
)

// haproxyConfig puts HAProxy in front of the replicas as docs/usage.md describes, with faster health checks so the
// test is short: a replica whose /ready fails once leaves the rotation; a connection refused or closed before any
// answer (a replica that has just exited) is retried on the other replica. A 503 is passed to the client, which
// retries it once after Retry-After. Server connections are not reused (http-server-close): a draining replica
// closes its idle connections, and a request HAProxy sent on one at that moment could not be resent (its body,
// with an image, is larger than HAProxy's retry buffer).
const haproxyConfig = `global
    maxconn 256

defaults
    mode http
    timeout connect 2s
    timeout client 5m
    timeout server 5m
    timeout check 2s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
    option http-server-close

frontend idefics2
    bind 127.0.0.1:{{.Port}}
    default_backend replicas

backend replicas
    balance leastconn
    option httpchk
    http-check send meth GET uri /ready ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    default-server inter 250ms fall 1 rise 2
{{- range .Replicas}}
    server {{.Name}} 127.0.0.1:{{.Port}} check
{{- end}}
`

// lockedBuffer collects a child's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// process is a child process the test started, with its stderr and its end.
type process struct {
	Name   string
	Port   int
	cmd    *exec.Cmd
	stderr lockedBuffer
	exited chan struct{}
	err    error
}

func start(t *testing.T, name string, port int, bin string, args ...string) *process {
	t.Helper()
	p := &process{Name: name, Port: port, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stderr, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.stderr.String())
		}
	})
	return p
}

// wait waits for the process to end and returns its exit code.
func (p *process) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		t.Fatalf("%s did not exit within %s:\n%s", p.Name, d, p.stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("%s: %v", p.Name, p.err)
	}
	return 0
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitReady polls url/ready until it answers 200.
func waitReady(t *testing.T, url string, p *process) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(url + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before it was ready: %v\n%s", p.Name, p.err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/ready did not answer 200 (last: %v)", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's folder")
		}
		dir = parent
	}
}

// served reads replica's /metrics: the chat requests it answered with 200.
func served(url string) (float64, error) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, m := range fams["idefics2_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "status" && l.GetValue() == "200" {
				return m.GetCounter().GetValue(), nil
			}
		}
	}
	return 0, nil
}

// outcome is one request's end as the client saw it.
type outcome struct {
	text        string
	retried     bool // after a 503
	connRetried bool // after a connection error, before any response
	err         error
}

// ask sends one chat request through the load balancer and reads its answer to the end (a JSON object, or an SSE
// stream that must end with a finish reason and data: [DONE]). A 503 is retried once, after its Retry-After, and a
// connection error before any response once (at most two retries, as OpenAI's clients make); any other status, a second 503 or an answer
// cut once it began is a failure.
func ask(client *http.Client, url, body string) outcome {
	var o outcome
	for {
		resp, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil && !o.connRetried {
			// No response at all (a connection the balancer had just opened to the replica as it closed its
			// port, with a body too large for the balancer to resend): retried once, as OpenAI's clients retry
			// connection errors. An answer cut after it began is never retried.
			o.connRetried = true
			continue
		}
		if err != nil {
			o.err = err
			return o
		}
		if resp.StatusCode == http.StatusServiceUnavailable && !o.retried {
			wait, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if err != nil || wait < 1 || wait > 10 {
				wait = 1
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			o.retried = true
			time.Sleep(time.Duration(wait) * time.Second)
			continue
		}
		o.text, o.err = readAnswer(resp)
		resp.Body.Close()
		return o
	}
}

type chunk struct {
	Choices []struct {
		Message *struct {
			Content *string `json:"content"`
		} `json:"message"`
		Delta *struct {
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func readAnswer(resp *http.Response) (string, error) {
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		var c chunk
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
			return "", fmt.Errorf("reading the answer: %w", err)
		}
		if len(c.Choices) != 1 || c.Choices[0].Message == nil || c.Choices[0].Message.Content == nil || c.Choices[0].FinishReason == nil {
			return "", errors.New("incomplete answer")
		}
		return *c.Choices[0].Message.Content, nil
	}
	var text, finish string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			if finish == "" {
				return text, errors.New("stream without a finish reason")
			}
			return text, nil
		}
		var c chunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return text, fmt.Errorf("chunk %q: %w", data, err)
		}
		if c.Error != nil {
			return text, fmt.Errorf("error chunk after %q: %s", text, c.Error.Message)
		}
		for _, ch := range c.Choices {
			if ch.Delta != nil && ch.Delta.Content != nil {
				text += *ch.Delta.Content
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
	}
	return text, fmt.Errorf("stream cut after %q (no data: [DONE]): %v", text, sc.Err())
}

// TestFleet: two replicas behind HAProxy take 200 requests (half streamed, eight images) from 8 clients; after the
// first 50 answers replica r1 gets SIGTERM. Every request must end with the answer the one-shot command gives for
// its image, no stream may be cut, and r1 must drain and exit 0 while r2 takes the rest.
func TestFleet(t *testing.T) {
	root := repoRoot(t)
	run, convert := filepath.Join(root, "bin", "idefics2-run"), filepath.Join(root, "bin", "convert")
	for _, b := range []string{run, convert} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("%v: build the binaries first (make build; make test-fleet does)", err)
		}
	}
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatalf("haproxy is not installed (make test-fleet installs it from the distribution): %v", err)
	}
	dir := t.TempDir()
	demo := filepath.Join(dir, "demo.gguf")
	if out, err := exec.Command(convert, "--in", filepath.Join(root, "testdata", "demo", "checkpoint-bf16"), "--out", demo,
		"--type", "f32", "--force").CombinedOutput(); err != nil {
		t.Fatalf("convert: %v\n%s", err, out)
	}

	// The reference: each image's answer from the one-shot command.
	var images, bodies []string
	want := map[string]string{}
	for i := 0; i < 8; i++ {
		img := filepath.Join(root, "testdata", "demo", "images", fmt.Sprintf("demo_%02d.png", i))
		out, err := exec.Command(run, "-m", demo, "--image", img, "-p", question, "-n", strconv.Itoa(maxTokens), "--temp", "0",
			"--device", "cpu", "-t", "1", "--json").Output()
		if err != nil {
			t.Fatalf("one-shot %s: %v", img, err)
		}
		var r struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("one-shot %s: %v: %s", img, err, out)
		}
		png, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, img)
		want[img] = r.Text
		msg, _ := json.Marshal([]map[string]any{{"role": "user", "content": []map[string]any{
			{"type": "image_url", "image_url": map[string]string{"url": "data:image/png;base64," + base64.StdEncoding.EncodeToString(png)}},
			{"type": "text", "text": question}}}})
		bodies = append(bodies, string(msg))
	}

	var replicas []*process
	for _, name := range []string{"r1", "r2"} {
		port := freePort(t)
		p := start(t, name, port, run, "serve", "-m", demo, "--port", strconv.Itoa(port), "--device", "cpu", "-t", "1",
			"--queue", "64", "--drain-timeout", strconv.Itoa(int(drainTimeout.Seconds())))
		replicas = append(replicas, p)
	}
	for _, p := range replicas {
		waitReady(t, fmt.Sprintf("http://127.0.0.1:%d", p.Port), p)
	}
	lbPort := freePort(t)
	var cfg bytes.Buffer
	if err := template.Must(template.New("cfg").Parse(haproxyConfig)).Execute(&cfg, map[string]any{"Port": lbPort, "Replicas": replicas}); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, cfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(haproxy, "-c", "-f", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	lb := start(t, "haproxy", lbPort, haproxy, "-db", "-f", cfgPath)
	lbURL := fmt.Sprintf("http://127.0.0.1:%d", lbPort)
	waitReady(t, lbURL, lb)

	// The load: 8 clients take the requests in turn; the 50th answer sends SIGTERM to r1.
	r1, r2 := replicas[0], replicas[1]
	r1URL := fmt.Sprintf("http://127.0.0.1:%d", r1.Port)
	client := &http.Client{Timeout: 5 * time.Minute}
	outcomes := make([]outcome, requests)
	jobs := make(chan int)
	var answered atomic.Int32
	termSent := make(chan int, 1)
	var r1Before float64
	go func() {
		for i := 0; i < requests; i++ {
			jobs <- i
		}
		close(jobs)
	}()
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				k := i % len(bodies)
				body := fmt.Sprintf(`{"messages":%s,"max_tokens":%d,"temperature":0,"stream":%v}`, bodies[k], maxTokens, i%2 == 1)
				o := ask(client, lbURL, body)
				if o.err == nil && o.text != want[images[k]] {
					o.err = fmt.Errorf("answer %q, want %q", o.text, want[images[k]])
				}
				outcomes[i] = o
				if answered.Add(1) == termAfter {
					r1Before, _ = served(r1URL)
					if err := r1.cmd.Process.Signal(syscall.SIGTERM); err != nil {
						t.Errorf("SIGTERM to r1: %v", err)
					}
					termSent <- termAfter
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-termSent:
	default:
		t.Fatal("the load ended before r1 got SIGTERM")
	}

	retried, connRetried, failed := 0, 0, 0
	for i, o := range outcomes {
		if o.retried {
			retried++
		}
		if o.connRetried {
			connRetried++
		}
		if o.err != nil {
			failed++
			if failed <= 10 {
				t.Errorf("request %d (stream %v): %v", i, i%2 == 1, o.err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d requests failed", failed, requests)
	}
	if code := r1.wait(t, drainTimeout+30*time.Second); code != 0 {
		t.Errorf("r1 exit code %d after SIGTERM, want 0:\n%s", code, r1.stderr.String())
	}
	if log := r1.stderr.String(); !strings.Contains(log, "draining") || !strings.Contains(log, "server stopped") {
		t.Errorf("r1 did not drain:\n%s", log)
	}
	if r1Before == 0 {
		t.Error("r1 had answered no request before its SIGTERM: the balancer did not use it")
	}
	r2Served, err := served(fmt.Sprintf("http://127.0.0.1:%d", r2.Port))
	if err != nil {
		t.Errorf("r2 /metrics: %v", err)
	}
	t.Logf("%d requests, %d clients: r1 answered %.0f before its SIGTERM, r2 %.0f in all; %d requests retried after a 503, "+
		"%d after a connection error", requests, clients, r1Before, r2Served, retried, connRetried)
	for _, line := range strings.Split(r1.stderr.String(), "\n") {
		if strings.Contains(line, "draining") {
			t.Logf("r1: %s", line)
		}
	}
	if err := r2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := r2.wait(t, time.Minute); code != 0 {
		t.Errorf("r2 exit code %d after SIGTERM, want 0", code)
	}
	_ = lb.cmd.Process.Signal(syscall.SIGTERM)
	lb.wait(t, 30*time.Second)
}
