package buildkit

import (
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

func TestPlatformPrefix(t *testing.T) {
	t.Parallel()

	for name, want := range map[string][2]string{
		"[linux/arm64 2/2] RUN uname -m > /arch":       {"linux/arm64", "[2/2] RUN uname -m > /arch"},
		"[linux/amd64 internal] load metadata for x":   {"linux/amd64", "[internal] load metadata for x"},
		"[linux/arm/v7 1/3] FROM busybox":              {"linux/arm/v7", "[1/3] FROM busybox"},
		"[linux/arm64] sh -c true":                     {"linux/arm64", "sh -c true"},
		"[2/2] RUN uname -m > /arch":                   {"", ""},
		"[internal] load build definition from Docker": {"", ""},
		"[stage-1 3/4] COPY --from=build /x /y":        {"", ""},
		"exporting to image":                           {"", ""},
	} {
		var got, rest string
		if m := platformPrefix.FindStringSubmatch(name); m != nil {
			got, rest = m[1], withoutPlatform(name, m[1])
		}
		require.Equal(t, want, [2]string{got, rest}, name)
	}
}

type line struct{ platform, text string }

func TestProgress(t *testing.T) {
	t.Parallel()

	now := time.Now()
	run, from := digest.FromString("run"), digest.FromString("from")
	var got []line
	ch := make(chan *client.SolveStatus, 10)
	ch <- &client.SolveStatus{Vertexes: []*client.Vertex{
		{Digest: from, Name: "[linux/arm64 1/2] FROM busybox", Started: &now, Completed: &now, Cached: true},
		{Digest: run, Name: "[linux/arm64 2/2] RUN make"},
	}}
	ch <- &client.SolveStatus{Vertexes: []*client.Vertex{{Digest: run, Name: "[linux/arm64 2/2] RUN make", Started: &now}}}
	// Output arrives in chunks that split lines, on two streams.
	ch <- &client.SolveStatus{Logs: []*client.VertexLog{
		{Vertex: run, Stream: 1, Data: []byte("compiling a")},
		{Vertex: run, Stream: 2, Data: []byte("warn: x\r\n")},
		{Vertex: run, Stream: 1, Data: []byte("nd b\nlinking\nno newline")},
	}}
	// A first build's cache does not exist yet: said calmly, not as an error;
	// any other failure to import it is still an ERROR.
	cache, cache2 := digest.FromString("cache"), digest.FromString("cache2")
	ch <- &client.SolveStatus{Vertexes: []*client.Vertex{
		{Digest: cache, Name: "importing cache manifest from registry:5000/acme/app:buildcache-linux-arm64", Started: &now, Completed: &now,
			Error: "registry:5000/acme/app:buildcache-linux-arm64: not found"},
		{Digest: cache2, Name: "importing cache manifest from registry:5000/acme/app:buildcache", Started: &now, Completed: &now,
			Error: "unexpected status: 401 Unauthorized"},
	}}
	ch <- &client.SolveStatus{Vertexes: []*client.Vertex{{
		Digest: run, Name: "[linux/arm64 2/2] RUN make", Started: &now, Completed: &now,
		Error: "process \"/bin/sh -c make\" did not complete successfully: exit code: 2",
	}}}
	close(ch)
	newProgress(func(p, s string) { got = append(got, line{p, s}) }, "").consume(ch)

	require.Equal(t, []line{
		{"linux/arm64", "CACHED [1/2] FROM busybox"},
		{"linux/arm64", "[2/2] RUN make"},
		{"linux/arm64", "warn: x"},
		{"linux/arm64", "compiling and b"},
		{"linux/arm64", "linking"},
		{"", "importing cache manifest from registry:5000/acme/app:buildcache-linux-arm64"},
		{"", "No registry cache at registry:5000/acme/app:buildcache-linux-arm64 yet (normal for a first build): this build runs without it and fills it."},
		{"", "importing cache manifest from registry:5000/acme/app:buildcache"},
		{"", "ERROR importing cache manifest from registry:5000/acme/app:buildcache: unexpected status: 401 Unauthorized"},
		{"linux/arm64", "no newline"},
		{"linux/arm64", "ERROR [2/2] RUN make: process \"/bin/sh -c make\" did not complete successfully: exit code: 2"},
	}, got)
}

func TestCleanMessage(t *testing.T) {
	t.Parallel()

	require.Equal(t,
		`failed to solve: process "/bin/sh -c exit 3" did not complete successfully: exit code: 3`,
		cleanMessage("rpc error: code = Unknown desc = failed to solve: process \"/bin/sh -c exit 3\"\n  did not complete successfully: exit code: 3\n"))
	require.Equal(t, "connection refused",
		cleanMessage("rpc error: code = Unavailable desc = rpc error: code = Unknown desc = connection refused"))
}
