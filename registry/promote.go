package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"

	"github.com/slipway-ci/slipway"
)

// PromoteSpec says what Promote copies where.
type PromoteSpec struct {
	// Source is the repository the build pushed to, such as
	// "registry:5000/acme/app", and Digest the index (or manifest) in it.
	Source string
	Digest string
	// Target is the repository to tag in; the same as Source, another
	// repository of the same registry, or one in another registry.
	Target string
	// Tags are bare tags ("v1.2.3"), applied in order.
	Tags []string
}

// PromotePlan is what Promote found before it wrote anything: the digest each
// tag pointed at ("" for a tag that did not exist), in the order of the tags.
type PromotePlan struct {
	Previous []string
}

// Promote points every tag of spec in spec.Target at spec.Source@spec.Digest
// without changing the digest:
//
//   - same repository: a manifest PUT of the exact bytes fetched by digest
//     under each tag; no blob is read or uploaded.
//   - another repository of the same registry: each missing blob is
//     cross-mounted from the source (POST …/blobs/uploads/?mount=…&from=…),
//     every child manifest (each platform and each attestation) is PUT by
//     digest with its exact bytes, then the index under each tag.
//   - another registry: the same walk, with every missing blob streamed from
//     the source to the target.
//
// Blobs and manifests the target already holds are not written again.
//
// Before writing, check is called with the digest each tag points at now
// ("" when it does not exist); when it returns an error nothing is written and
// Promote returns that error with the plan. Tags whose previous digest is
// spec.Digest are skipped. On a registry error the tags written so far stay.
func (c *Client) Promote(ctx context.Context, spec PromoteSpec, check func(previous []string) error) (PromotePlan, error) {
	var plan PromotePlan
	src, err := name.NewDigest(spec.Source+"@"+spec.Digest, c.nameOptions()...)
	if err != nil {
		return plan, errorf(slipway.EINVALID, "promoting %s@%s: %v", spec.Source, spec.Digest, err)
	}
	dst, err := name.NewRepository(spec.Target, c.nameOptions()...)
	if err != nil {
		return plan, errorf(slipway.EINVALID, "promoting to %s: %v", spec.Target, err)
	}
	tags := make([]name.Tag, len(spec.Tags))
	for i, t := range spec.Tags {
		if !slipway.ValidTag(t) {
			return plan, errorf(slipway.EINVALID, "promoting to %s: invalid tag %q", spec.Target, t)
		}
		tags[i] = dst.Tag(t)
	}

	puller, tagger, err := c.remotes.get(c)
	if err != nil {
		return plan, fmt.Errorf("promoting %s: %w", src, err)
	}
	// The tags' current digests and the source manifest are independent
	// reads: make them at once, so a promotion costs about one round trip
	// more than a plain retag.
	plan.Previous = make([]string, len(tags))
	var desc *remote.Descriptor
	// Not errgroup.WithContext: desc keeps the context for the children it
	// fetches later, so it must outlive Wait.
	var g errgroup.Group
	for i, tag := range tags {
		g.Go(func() error {
			d, err := puller.Head(ctx, tag)
			if err != nil {
				var terr *transport.Error
				if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
					return nil // a new tag
				}
				return interpretError(fmt.Sprintf("reading tag %s", tag), err)
			}
			plan.Previous[i] = d.Digest.String()
			return nil
		})
	}
	g.Go(func() error {
		// Get checks that the bytes hash to the digest asked for.
		d, err := puller.Get(ctx, src)
		if err != nil {
			return interpretError(fmt.Sprintf("fetching %s", src), err)
		}
		desc = d
		return nil
	})
	if err := g.Wait(); err != nil {
		return plan, err
	}
	if check != nil {
		if err := check(plan.Previous); err != nil {
			return plan, err
		}
	}

	sameRepo := dst.Name() == src.Context().Name()
	copied := sameRepo
	for i, tag := range tags {
		if plan.Previous[i] == spec.Digest {
			continue // already there: nothing to write
		}
		if !copied {
			// Push writes what the target lacks (children by digest, blobs
			// mounted or streamed), then the index under this tag. A pusher
			// of its own: a cached one would remember blobs it once wrote
			// and skip them even if the registry lost them since.
			pusher, err := remote.NewPusher(c.remoteOptions(ctx)...)
			if err != nil {
				return plan, fmt.Errorf("promoting %s: %w", src, err)
			}
			if err := pusher.Push(ctx, tag, desc); err != nil {
				return plan, interpretError(fmt.Sprintf("copying %s to %s", src, tag), err)
			}
			copied = true
			continue
		}
		// A *remote.Descriptor is Taggable with its raw manifest and media
		// type, so Put sends the bytes as fetched.
		if err := tagger.Put(ctx, tag, desc); err != nil {
			return plan, interpretError(fmt.Sprintf("tagging %s as %s", src, tag), err)
		}
	}
	return plan, nil
}

// remoteTTL is how long Promote reuses one Puller and Pusher. Reuse saves the
// /v2/ ping and the token exchange of every call (two of a plain retag's four
// round trips); renewing them now and then picks up rotated credentials.
const remoteTTL = 5 * time.Minute

// remoteCache holds the Puller and the Pusher that Promote shares between
// calls. The Pusher is used for manifest PUTs only (Put): it keeps no state
// about blobs. The zero value is ready to use.
type remoteCache struct {
	mu     sync.Mutex
	made   time.Time
	puller *remote.Puller
	pusher *remote.Pusher
}

func (rc *remoteCache) get(c *Client) (*remote.Puller, *remote.Pusher, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.puller != nil && time.Since(rc.made) < remoteTTL {
		return rc.puller, rc.pusher, nil
	}
	// Each call passes its own context; this one only satisfies the options.
	opts := c.remoteOptions(context.Background())
	puller, err := remote.NewPuller(opts...)
	if err != nil {
		return nil, nil, err
	}
	pusher, err := remote.NewPusher(opts...)
	if err != nil {
		return nil, nil, err
	}
	rc.puller, rc.pusher, rc.made = puller, pusher, time.Now()
	return puller, pusher, nil
}
