package slipway

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestOutboundPolicy: a repository's integration webhook reaches only hosts an
// admin listed; names never reach loopback or link-local addresses, redirects
// never leave the host, and refusals name the host and the setting only.
func TestOutboundPolicy(t *testing.T) {
	hits := 0
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		if r.URL.Path == "/elsewhere" {
			http.Redirect(w, r, "http://evil.example/", http.StatusFound)
			return
		}
		if r.URL.Path == "/same" {
			http.Redirect(w, r, "/ok", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(target.Close)
	port := target.URL[strings.LastIndex(target.URL, ":"):]

	must := func(list string) *OutboundPolicy {
		p, err := ParseOutboundPolicy(list)
		require.NoError(t, err)
		return p
	}
	get := func(p *OutboundPolicy, u string) (int, error) {
		resp, err := p.Client(5 * time.Second).Get(u)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	refused := func(t *testing.T, err error, contains string) {
		t.Helper()
		require.Error(t, err)
		e, ok := OutboundRefusal(err)
		require.True(t, ok, "a refusal, not a transport error: %v", err)
		require.Contains(t, e.Message, contains)
	}

	// Nothing listed, nothing called.
	_, err := get(nil, target.URL)
	refused(t, err, "SLIPWAY_OUTBOUND_ALLOWED_HOSTS")
	_, err = get(must(""), target.URL)
	refused(t, err, "127.0.0.1")
	// A name that resolves to loopback is not loopback's permission.
	_, err = get(must("localhost"), "http://localhost"+port+"/")
	refused(t, err, "loopback")
	// Link-local (cloud metadata) by IP is refused unless listed as an IP.
	_, err = get(must("qa.example.com"), "http://169.254.169.254/latest/meta-data/")
	refused(t, err, "169.254.169.254")
	// A host not listed, and a wildcard that does not cover the domain itself.
	_, err = get(must("*.example.com"), "http://example.com/")
	refused(t, err, "example.com")
	_, err = get(must("qa.example.com"), "http://qa.example.com.evil.test/")
	refused(t, err, "qa.example.com.evil.test")
	_, err = get(must("127.0.0.1"), "file:///etc/passwd")
	refused(t, err, "http and https")
	require.Zero(t, hits, "no request reached the target")

	// Listed by IP, it is called; a redirect on the same host is followed,
	// one to another host is not.
	p := must(" 127.0.0.1 , *.example.com")
	code, err := get(p, target.URL+"/")
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, code)
	code, err = get(p, target.URL+"/same")
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, code)
	_, err = get(p, target.URL+"/elsewhere")
	refused(t, err, "another host")
	// A CIDR entry works like an IP.
	code, err = get(must("127.0.0.0/8"), target.URL+"/")
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, code)

	// A proxy from the environment is not used (it would connect past the checks).
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	code, err = get(p, target.URL+"/")
	require.NoError(t, err, "HTTP_PROXY ignored")
	require.Equal(t, http.StatusNoContent, code)

	for _, bad := range []string{"*", "a b", "10.0.0.0/33", "http://x", "*.", "x..y"} {
		_, err := ParseOutboundPolicy(bad)
		require.Error(t, err, bad)
		require.Equal(t, EINVALID, ErrorCode(err))
	}
	u, _ := url.Parse("https://QA.Example.com:8443/hook")
	require.NoError(t, must("qa.example.com").CheckURL(u), "names are case-insensitive, any port")
}
