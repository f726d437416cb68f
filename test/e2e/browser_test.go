package e2e

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
	"github.com/stretchr/testify/require"
)

// chromiumPath finds Debian's chromium (installed by `make deps`); the test
// skips without it.
func chromiumPath(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium is not installed: run `make deps`")
	return ""
}

// newBrowser starts a headless chromium with a fresh profile and returns a
// tab's context, valid until the test ends. The flags keep it off the
// network (the machine's is closed) and let it run as root.
func newBrowser(t testing.TB) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1440, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	require.NoError(t, chromedp.Do(ctx)) // starts the browser
	return ctx
}

// do runs browser actions with a deadline.
func do(t testing.TB, ctx context.Context, d time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	require.NoError(t, chromedp.Do(ctx, actions...))
}

// get runs one browser action and returns its value.
func get[T any](t testing.TB, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	require.NoError(t, err)
	return v
}

// wait polls a JavaScript predicate in the page until it holds.
func wait(t testing.TB, ctx context.Context, d time.Duration, predicate string) {
	t.Helper()
	pctx, cancel := context.WithTimeout(ctx, d+10*time.Second)
	defer cancel()
	_, err := chromedp.Run(pctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil {
		dir := t.TempDir()
		screenshot(t, ctx, dir, "failed-wait")
		html := get(t, ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML.slice(0, 20000)`))
		t.Fatalf("waiting for %s: %v\npage:\n%s", predicate, err, html)
	}
}

// screenshot saves the whole page as <name>.png in dir (a folder of the
// test's temp dir) and prints the path. TEST_SCREENSHOT_DIR, when set, gets a
// copy that outlives the test.
func screenshot(t testing.TB, ctx context.Context, dir, name string) {
	t.Helper()
	png := get(t, ctx, chromedp.FullScreenshot(100))
	path := filepath.Join(dir, name+".png")
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot: %s", path)
	if keep := os.Getenv("TEST_SCREENSHOT_DIR"); keep != "" {
		require.NoError(t, os.MkdirAll(keep, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(keep, name+".png"), png, 0o644))
	}
}

// signIn signs the browser in with token through the sign-in form.
func signIn(t testing.TB, ctx context.Context, url, token string) {
	t.Helper()
	do(t, ctx, 30*time.Second,
		chromedp.Navigate(url+"/signin"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("now")),
	)
}

// postStatus posts a form from the page with fetch and returns the status.
func postStatus(t testing.TB, ctx context.Context, path string, fields map[string]string) int {
	t.Helper()
	var js strings.Builder
	js.WriteString("(async () => { const f = new URLSearchParams();")
	for k, v := range fields {
		fmt.Fprintf(&js, "f.append(%q, %q);", k, v)
	}
	fmt.Fprintf(&js, "const r = await fetch(%q, {method: 'POST', body: f, redirect: 'manual'}); return r.status; })()", path)
	return get(t, ctx, chromedp.Evaluate[int](js.String(), chromedp.EvalAwaitPromise))
}
