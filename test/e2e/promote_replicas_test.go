package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway"
	"github.com/slipway-ci/slipway/test/testenv"
)

// TestPromotionAcrossServerReplicas: the Helm chart runs two server replicas,
// so two promotions of different builds to one new version tag can reach two
// processes at once. The lock per target repository is PostgreSQL's, so in
// every round exactly one wins, the other is refused (409, audited), and the
// tag points at the winner's digest.
func TestPromotionAcrossServerReplicas(t *testing.T) {
	ctx := context.Background()
	base, err := testenv.PushBaseImage(ctx, requireEnv(t, "TEST_REGISTRY"))
	require.NoError(t, err)
	host := requireEnv(t, "TEST_REGISTRY")
	// Both repositories may promote into one release repository.
	s := newStack(t, "SLIPWAY_PROMOTION_TARGETS="+host+"/e2e*/releases/app")
	second := "http://" + freeAddr(t)
	s.start("server", "SLIPWAY_ADDR="+second[len("http://"):])
	s.start("worker", "SLIPWAY_WORKER_CONCURRENCY=2", "SLIPWAY_WORKER_ID=e2e-replicas")
	r := newRepos(t)

	var ids []int64
	for _, name := range []string{"one", "two"} {
		url, commit := r.add(name, map[string]string{"Dockerfile": dockerfile(base, "RUN echo "+name+" > /name")})
		ids = append(ids, s.pushBuild("replicas-"+name, testenv.PushParams{Owner: "acme", Name: name, CloneURL: url,
			Ref: "refs/heads/main", After: commit}))
	}
	var digests []string
	for _, id := range ids {
		b := s.waitDone(id)
		require.Equal(t, slipway.BuildSucceeded, b.State, "error: %s\nlog:\n%s", b.Error, s.logs(id))
		digests = append(digests, b.IndexDigest)
	}
	require.NotEqual(t, digests[0], digests[1])

	target := s.registry + "/releases/app"
	promoteAt := func(serverURL string, id int64, tag string) int {
		body, _ := json.Marshal(map[string]any{"tags": []string{tag}, "repository": target})
		req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/api/v1/builds/%d/promote", serverURL, id), bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	const rounds = 8
	for round := range rounds {
		tag := fmt.Sprintf("v0.%d.0", round)
		var wg sync.WaitGroup
		start := make(chan struct{})
		codes := make([]int, 2)
		for i, serverURL := range []string{s.url, second} {
			wg.Go(func() {
				<-start
				codes[i] = promoteAt(serverURL, ids[i], tag)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, c := range codes {
			switch c {
			case http.StatusOK:
				require.Equal(t, -1, winner, "round %d: both replicas promoted %s: %v", round, tag, codes)
				winner = i
			case http.StatusConflict:
			default:
				t.Fatalf("round %d: unexpected answers %v", round, codes)
			}
		}
		require.NotEqual(t, -1, winner, "round %d: nobody promoted %s: %v", round, tag, codes)
		d, err := remote.Head(mustRef(t, target+":"+tag))
		require.NoError(t, err)
		require.Equal(t, digests[winner], d.Digest.String(), "round %d: the tag is the winner's", round)

		var promoted, refused int
		require.NoError(t, s.db.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE outcome = 'promoted'), count(*) FILTER (WHERE outcome = 'refused')
			FROM promotions WHERE tag = $1`, tag).Scan(&promoted, &refused))
		require.Equal(t, [2]int{1, 1}, [2]int{promoted, refused}, "round %d: one promoted and one refused audit row", round)
	}
}
