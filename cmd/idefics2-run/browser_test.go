//go:build browser

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The chat page driven in a real browser (make test-browser, which installs Debian's chromium when it is absent).
// IDEFICS2_PAGE_SCREENSHOT, when set, is a path that also receives the first case's screenshot (docs/usage.md uses
// it).

// browserPath finds a Chromium or Chrome executable; the test fails without one (make test-browser installs it).
func browserPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium or chrome executable on PATH (make test-browser installs Debian's chromium)")
	return ""
}

// newBrowser starts a headless browser and returns its context.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browserPath(t)), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 1150), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	return ctx
}

// into runs a and stores its value in dst.
func into[T any](dst *T, a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		v, err := a(ctx, t)
		*dst = v
		return chromedp.Void{}, err
	}
}

// script runs the statement js in the page.
func script(js string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Evaluate[bool]("(() => { "+js+"; return true; })()")(ctx, t)
		return chromedp.Void{}, err
	}
}

// wait polls the script expr until it is true, for at most d.
func wait(expr string, d time.Duration) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(d))(ctx, t)
		if err != nil {
			err = fmt.Errorf("waiting for %s: %w", expr, err)
		}
		return chromedp.Void{}, err
	}
}

// lastAnswer is the script giving the text of the last assistant message.
const lastAnswer = `(() => { const m = document.querySelectorAll(".msg.assistant .text"); return m.length ? m[m.length-1].textContent : ""; })()`

// lastStats is the script giving the statistics line under the last assistant message.
const lastStats = `(() => { const m = document.querySelectorAll(".msg.assistant .stats"); return m.length ? m[m.length-1].textContent : ""; })()`

func TestBrowserPage(t *testing.T) {
	_, url := startServer(t, "demo", func(c *serverConfig) { c.defaults.MaxTokens = 32 })
	ctx := newBrowser(t)
	img, err := filepath.Abs(demoPNG("demo_00.png"))
	if err != nil {
		t.Fatal(err)
	}
	var answer, stats, sees string
	var shot []byte
	err = chromedp.Do(ctx,
		chromedp.Navigate(url+"/"),
		chromedp.WaitVisible(chromedp.CSS("#prompt")),
		chromedp.SetUploadFiles(chromedp.CSS("#file"), []string{img}),
		// What the model sees: the preview of the picked image, drawn from the server's preprocessor output.
		chromedp.WaitVisible(chromedp.CSS("#sees figure img")),
		into(&sees, chromedp.Text(chromedp.CSS("#sees"))),
		chromedp.SendKeys(chromedp.CSS("#prompt"), "What shape is in the picture?"),
		chromedp.Click(chromedp.CSS("#send")),
		wait(lastStats+` !== ""`, 2*time.Minute),
		into(&answer, chromedp.Evaluate[string](lastAnswer)),
		into(&stats, chromedp.Evaluate[string](lastStats)),
		into(&shot, chromedp.FullScreenshot(100)),
	)
	if err != nil {
		t.Fatalf("driving the page: %v", err)
	}
	shotPath := filepath.Join(t.TempDir(), "page.png")
	if err := os.WriteFile(shotPath, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shotPath)
	if p := os.Getenv("IDEFICS2_PAGE_SCREENSHOT"); p != "" {
		if err := os.WriteFile(p, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if strings.TrimSpace(answer) != "A red circle." {
		t.Errorf("answer %q, want %q", answer, "A red circle.")
	}
	for _, want := range []string{"TTFT", "tok/s", "tokens", "stop"} {
		if !strings.Contains(stats, want) {
			t.Errorf("statistics %q lack %q", stats, want)
		}
	}
	if !strings.Contains(sees, "patches kept") || !strings.Contains(sees, "image tokens") {
		t.Errorf("what the model sees: %q lacks the patch and token counts", sees)
	}
}

// TestBrowserStop streams a long answer and stops it midway: the page keeps what came and says it was stopped, and
// the server counts a cancelled generation; New chat then empties the conversation.
func TestBrowserStop(t *testing.T) {
	srv, url := startServer(t, "p1", func(c *serverConfig) { c.defaults.MaxTokens = 3000 })
	ctx := newBrowser(t)
	var answer, stats string
	err := chromedp.Do(ctx,
		chromedp.Navigate(url+"/"),
		chromedp.WaitVisible(chromedp.CSS("#prompt")),
		wait(`document.getElementById("maxTokens").value === "3000"`, 30*time.Second),
		script(`document.getElementById("temperature").value = "1"`),
		chromedp.SendKeys(chromedp.CSS("#prompt"), "Tell a long story."),
		chromedp.Click(chromedp.CSS("#send")),
		wait(lastAnswer+`.length > 20`, 2*time.Minute),
		chromedp.Click(chromedp.CSS("#stop")),
		wait(lastStats+` !== ""`, time.Minute),
		into(&answer, chromedp.Evaluate[string](lastAnswer)),
		into(&stats, chromedp.Evaluate[string](lastStats)),
		// New chat empties the conversation.
		chromedp.Click(chromedp.CSS("#new")),
		wait(`document.querySelectorAll(".msg").length === 0`, 10*time.Second),
	)
	if err != nil {
		t.Fatalf("driving the page: %v", err)
	}
	if !strings.Contains(stats, "stopped") {
		t.Errorf("statistics %q: want the answer marked stopped", stats)
	}
	if len(answer) < 20 {
		t.Errorf("answer %q: want the text streamed before the stop kept", answer)
	}
	deadline := time.Now().Add(time.Minute)
	for srv.cancelled.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the server did not stop the generation (served %d, cancelled %d)", srv.served.Load(), srv.cancelled.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBrowserAPIKey: with --api-key the page asks for the key, refuses a wrong one, and works with the right one.
func TestBrowserAPIKey(t *testing.T) {
	srv, url := startServer(t, "demo", func(c *serverConfig) { c.apiKey = "sesame" })
	ctx := newBrowser(t)
	var model string
	err := chromedp.Do(ctx,
		chromedp.Navigate(url+"/"),
		chromedp.WaitVisible(chromedp.CSS("#keybox")),
		chromedp.SendKeys(chromedp.CSS("#key"), "wrong"),
		chromedp.Click(chromedp.CSS("#keyok")),
		// The wrong key gets 401 again: the box comes back.
		wait(`document.getElementById("keybox").style.display === "flex"`, 30*time.Second),
		script(`document.getElementById("key").value = ""`),
		chromedp.SendKeys(chromedp.CSS("#key"), "sesame"),
		chromedp.Click(chromedp.CSS("#keyok")),
		wait(`document.getElementById("model").textContent === `+fmt.Sprintf("%q", srv.m.Name()), 30*time.Second),
		into(&model, chromedp.Text(chromedp.CSS("#model"))),
	)
	if err != nil {
		t.Fatalf("driving the page: %v", err)
	}
	if model != srv.m.Name() {
		t.Errorf("model %q, want %q", model, srv.m.Name())
	}
}
