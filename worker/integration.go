package worker

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/slipway-ci/slipway"
)

// DefaultIntegrationTimeout is how long a build waits for the result of an
// external integration test run when .slipway.yml gives no timeout.
const DefaultIntegrationTimeout = 30 * time.Minute

// SignatureHeader carries the HMAC-SHA256 of an integration webhook's body,
// keyed with SLIPWAY_INTEGRATION_SECRET: "sha256=" and 64 hex digits, as
// GitHub signs its webhooks.
const SignatureHeader = "X-Slipway-Signature-256"

// IntegrationSpec is the integration section of .slipway.yml: an external
// system that tests the pushed image after slipway's own tests passed.
type IntegrationSpec struct {
	// Webhook is the http(s) URL slipway POSTs the signed IntegrationRequest to.
	Webhook string `yaml:"webhook"`
	// Timeout is how long to wait for the result; the build fails after it.
	Timeout time.Duration `yaml:"timeout"`
}

func (s *IntegrationSpec) validate() error {
	if s == nil {
		return nil
	}
	u, err := url.Parse(s.Webhook)
	if s.Webhook == "" {
		return errors.New("webhook is required")
	} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook %q is not an http(s) URL", s.Webhook)
	}
	if s.Timeout < 0 {
		return errors.New("timeout must be positive")
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultIntegrationTimeout
	}
	return nil
}

// IntegrationRequest is the JSON body slipway POSTs to an integration webhook.
type IntegrationRequest struct {
	BuildID     int64                    `json:"build_id"`
	Repo        string                   `json:"repo"`
	Ref         string                   `json:"ref"`
	Commit      string                   `json:"commit"`
	Image       string                   `json:"image"`
	IndexDigest string                   `json:"index_digest"`
	Platforms   []slipway.PlatformDigest `json:"platforms"`
	Callback    IntegrationCallback      `json:"callback"`
}

// IntegrationCallback tells the external system where to send its result: a
// POST of a slipway.IntegrationResult to URL with "Authorization: Bearer
// <Token>", once, before ExpiresAt.
type IntegrationCallback struct {
	URL       string    `json:"url"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// SignIntegration returns the SignatureHeader value of body under secret.
func SignIntegration(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// runIntegration asks the external system of spec to test the pushed index and
// waits for its callback, up to spec.Timeout. It returns the results to record
// (one per external test, or one named "integration") and an error when the
// run did not pass: the webhook failed, the result said so, or none came.
func (w *Worker) runIntegration(ctx context.Context, build *slipway.Build, spec *IntegrationSpec, index string, platforms []slipway.PlatformDigest, sink *logSink) ([]slipway.TestResult, error) {
	const step = "integration"
	failed := func(msg string, d time.Duration) ([]slipway.TestResult, error) {
		sink.Add("", step, "Integration tests failed: "+msg)
		return []slipway.TestResult{{Name: step, ExitCode: -1, DurationMS: d.Milliseconds(), Error: msg}},
			fmt.Errorf("integration tests failed: %s", msg)
	}
	switch {
	case w.cfg.Integrations == nil:
		return failed("this worker cannot run external integration tests (no callback store)", 0)
	case w.cfg.IntegrationSecret == "":
		return failed("SLIPWAY_INTEGRATION_SECRET is unset, so the webhook call cannot be signed", 0)
	case w.cfg.PublicURL == "":
		return failed("SLIPWAY_PUBLIC_URL is unset, so there is no callback URL to send", 0)
	}
	started := time.Now()
	secret := slipway.NewTokenSecret()
	expires := started.Add(spec.Timeout).UTC().Truncate(time.Second)
	if err := w.cfg.Integrations.StartIntegration(ctx, build.ID, secret, expires); err != nil {
		return failed(fmt.Sprintf("recording the callback: %v", err), 0)
	}
	body, err := json.Marshal(IntegrationRequest{
		BuildID: build.ID, Repo: build.Repo, Ref: build.Ref, Commit: build.Commit,
		Image: build.Image, IndexDigest: index, Platforms: platforms,
		Callback: IntegrationCallback{
			URL:       w.cfg.PublicURL + "/api/v1/builds/" + strconv.FormatInt(build.ID, 10) + "/tests",
			Token:     secret,
			ExpiresAt: expires,
		},
	})
	if err != nil {
		return failed(fmt.Sprintf("encoding the request: %v", err), 0)
	}
	target := redactURLs(spec.Webhook)
	sink.Add("", step, fmt.Sprintf("Calling %s; waiting up to %s for the result", target, spec.Timeout))
	if err := w.callIntegration(ctx, spec.Webhook, build.ID, body); err != nil {
		if refusal, ok := slipway.OutboundRefusal(err); ok {
			return failed(fmt.Sprintf("integration webhook not called: %s", refusal.Message), time.Since(started))
		}
		return failed(fmt.Sprintf("calling %s: %v", target, redactURLs(err.Error())), time.Since(started))
	}

	wctx, cancel := context.WithDeadline(ctx, started.Add(spec.Timeout))
	defer cancel()
	tick := time.NewTicker(min(time.Second, w.cfg.PollInterval))
	defer tick.Stop()
	for {
		res, err := w.cfg.Integrations.FindIntegrationResult(wctx, build.ID)
		if err != nil && wctx.Err() == nil {
			return failed(fmt.Sprintf("reading the result: %v", err), time.Since(started))
		}
		if res != nil {
			return w.integrationResults(res, time.Since(started), sink)
		}
		select {
		case <-tick.C:
		case <-wctx.Done():
			if ctx.Err() != nil {
				return failed(context.Cause(ctx).Error(), time.Since(started))
			}
			return failed(fmt.Sprintf("no result from %s within %s", target, spec.Timeout), time.Since(started))
		}
	}
}

// callIntegration POSTs the signed body; any answer but 2xx is an error.
func (w *Worker) callIntegration(ctx context.Context, webhook string, buildID int64, body []byte) error {
	u, err := url.Parse(webhook)
	if err != nil {
		return err
	}
	if err := w.cfg.Outbound.CheckURL(u); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodPost, webhook, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "slipway")
	req.Header.Set("X-Slipway-Event", "integration")
	req.Header.Set("X-Slipway-Build", strconv.FormatInt(buildID, 10))
	req.Header.Set(SignatureHeader, SignIntegration(w.cfg.IntegrationSecret, body))
	resp, err := w.httpClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// httpClient is the client of the integration webhook calls, made once from
// the outbound policy.
func (w *Worker) httpClient() *http.Client {
	w.outboundOnce.Do(func() { w.outbound = w.cfg.Outbound.Client(30 * time.Second) })
	return w.outbound
}

// integrationResults turns a reported result into test results: the external
// system's own tests when it sent any, else one named "integration".
func (w *Worker) integrationResults(res *slipway.IntegrationResult, d time.Duration, sink *logSink) ([]slipway.TestResult, error) {
	passed := res.Passed
	out := make([]slipway.TestResult, 0, len(res.Tests)+1)
	for _, t := range res.Tests {
		t.Name = "integration:" + t.Name
		passed = passed && t.Passed
		out = append(out, t)
	}
	if len(out) == 0 {
		r := slipway.TestResult{Name: "integration", Passed: res.Passed, DurationMS: d.Milliseconds()}
		if !res.Passed {
			r.ExitCode, r.Error = 1, slipway.OneLine(res.Message)
		}
		out = append(out, r)
	}
	for _, t := range out {
		verdict := "passed"
		if !t.Passed {
			verdict = "failed"
			if t.Error != "" {
				verdict += ": " + t.Error
			}
		}
		sink.Add(t.Platform, "integration", fmt.Sprintf("Test %q %s", t.Name, verdict))
	}
	if !passed {
		msg := slipway.OneLine(res.Message)
		if msg == "" {
			msg = "the external system reported a failure"
		}
		sink.Add("", "integration", "Integration tests failed: "+msg)
		return out, fmt.Errorf("integration tests failed: %s", msg)
	}
	sink.Add("", "integration", fmt.Sprintf("Integration tests passed (%s)", d.Round(10*time.Millisecond)))
	return out, nil
}
