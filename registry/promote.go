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

// PromoteSpec says what a promotion (Resolve, then Retag) copies where.
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

// Resolved is what Resolve read of a promotion before anything is written:
// the digest each tag of Spec points at now, and the source manifest.
type Resolved struct {
	Spec PromoteSpec
	// Previous is the digest each tag of Spec.Tags points at now, in order;
	// "" for a tag that does not exist.
	Previous []string

	src  name.Digest
	tags []name.Tag
	desc *remote.Descriptor
}

// Resolve reads what a promotion of spec would change, writing nothing: the
// digest each tag points at in spec.Target and the source index
// spec.Source@spec.Digest (checked to hash to spec.Digest). The reads run at
// once, so a promotion costs about one round trip more than a plain retag.
// A missing tag is no error; a missing source or a registry error is, with
// the registry host named (see interpretError). The result stays valid for
// Retag as long as ctx does.
func (c *Client) Resolve(ctx context.Context, spec PromoteSpec) (*Resolved, error) {
	src, err := name.NewDigest(spec.Source+"@"+spec.Digest, c.nameOptions()...)
	if err != nil {
		return nil, errorf(slipway.EINVALID, "promoting %s@%s: %v", spec.Source, spec.Digest, err)
	}
	dst, err := name.NewRepository(spec.Target, c.nameOptions()...)
	if err != nil {
		return nil, errorf(slipway.EINVALID, "promoting to %s: %v", spec.Target, err)
	}
	r := &Resolved{Spec: spec, src: src, tags: make([]name.Tag, len(spec.Tags)), Previous: make([]string, len(spec.Tags))}
	for i, t := range spec.Tags {
		if !slipway.ValidTag(t) {
			return nil, errorf(slipway.EINVALID, "promoting to %s: invalid tag %q", spec.Target, t)
		}
		r.tags[i] = dst.Tag(t)
	}
	puller, _, err := c.remotes.get(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("promoting %s: %w", src, err)
	}
	// Not errgroup.WithContext: desc keeps the context for the children it
	// fetches later, so it must outlive Wait.
	var g errgroup.Group
	for i, tag := range r.tags {
		g.Go(func() error {
			d, err := puller.Head(ctx, tag)
			if err != nil {
				var terr *transport.Error
				if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
					return nil // a new tag
				}
				return interpretError(ctx, fmt.Sprintf("reading tag %s", tag), err)
			}
			r.Previous[i] = d.Digest.String()
			return nil
		})
	}
	g.Go(func() error {
		// Get checks that the bytes hash to the digest asked for.
		d, err := puller.Get(ctx, src)
		if err != nil {
			return interpretError(ctx, fmt.Sprintf("fetching %s", src), err)
		}
		r.desc = d
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return r, nil
}

// Retag points every tag of r.Spec in r.Spec.Target at the source r.Spec
// describes, without changing the digest; tags whose Previous digest is
// r.Spec.Digest already are skipped. How:
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
// Blobs and manifests the target already holds are not written again. On a
// registry error the tags written so far stay. Retag does not re-read the
// tags: the caller serializes promotions to one target (promote.Service
// holds a lock across Resolve and Retag).
func (c *Client) Retag(ctx context.Context, r *Resolved) error {
	if len(r.tags) == 0 {
		return nil
	}
	_, tagger, err := c.remotes.get(ctx, c)
	if err != nil {
		return fmt.Errorf("promoting %s: %w", r.src, err)
	}
	copied := r.tags[0].Context().Name() == r.src.Context().Name()
	for i, tag := range r.tags {
		if r.Previous[i] == r.Spec.Digest {
			continue // already there: nothing to write
		}
		if !copied {
			// Push writes what the target lacks (children by digest, blobs
			// mounted or streamed), then the index under this tag. A pusher
			// of its own: a cached one would remember blobs it once wrote
			// and skip them even if the registry lost them since.
			pusher, err := remote.NewPusher(c.remoteOptions(ctx)...)
			if err != nil {
				return fmt.Errorf("promoting %s: %w", r.src, err)
			}
			if err := pusher.Push(ctx, tag, r.desc); err != nil {
				return interpretError(ctx, fmt.Sprintf("copying %s to %s", r.src, tag), err)
			}
			copied = true
			continue
		}
		// A *remote.Descriptor is Taggable with its raw manifest and media
		// type, so Put sends the bytes as fetched.
		if err := tagger.Put(ctx, tag, r.desc); err != nil {
			return interpretError(ctx, fmt.Sprintf("tagging %s as %s", r.src, tag), err)
		}
	}
	return nil
}

// remoteTTL is how long Resolve and Retag reuse one Puller and Pusher. Reuse saves the
// /v2/ ping and the token exchange of every call (two of a plain retag's four
// round trips); renewing them now and then picks up rotated credentials.
const remoteTTL = 5 * time.Minute

// remoteCache holds the Puller and the Pusher that Resolve and Retag share between
// calls. The Pusher is used for manifest PUTs only (Put): it keeps no state
// about blobs. The zero value is ready to use.
type remoteCache struct {
	mu     sync.Mutex
	made   time.Time
	puller *remote.Puller
	pusher *remote.Pusher
}

func (rc *remoteCache) get(ctx context.Context, c *Client) (*remote.Puller, *remote.Pusher, error) {
	if RepoAuthsFrom(ctx) != nil {
		// A repository's own credentials are never shared with other calls.
		opts := c.remoteOptions(ctx)
		puller, err := remote.NewPuller(opts...)
		if err != nil {
			return nil, nil, err
		}
		pusher, err := remote.NewPusher(opts...)
		return puller, pusher, err
	}
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
