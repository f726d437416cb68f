package buildkit

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/platforms"
	"golang.org/x/sync/errgroup"
)

// Endpoint is one buildkitd of a pool, with the platforms it builds natively.
// An endpoint without platforms builds whatever it is asked to (natively or
// under QEMU emulation).
type Endpoint struct {
	Config
	Platforms []string
}

// ParseEndpoints reads SLIPWAY_BUILDKIT_ADDR: one address, or a comma-separated
// list of addresses each optionally prefixed by the platform it builds
// natively, such as
//
//	linux/amd64=unix:///run/buildkit/amd64.sock,linux/arm64=tcp://arm-node:1234
//
// An address may appear several times with different platforms, and a platform
// with several addresses. TLS options go in the address's query, with
// buildctl's flag names: tcp://arm:1234?tlscacert=/ca.pem&tlscert=/c.pem&tlskey=/k.pem
// (also tlsservername and tlsdir). Errors name the bad entry.
func ParseEndpoints(s string) ([]Endpoint, error) {
	var out []Endpoint
	index := map[string]int{}
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		var platform string
		if i := strings.Index(entry, "="); i >= 0 && !strings.Contains(entry[:i], "://") {
			platform, entry = entry[:i], entry[i+1:]
			p, err := platforms.Parse(platform)
			if err != nil {
				return nil, fmt.Errorf("buildkit address %q: platform %q: %w", entry, platform, err)
			}
			platform = platforms.Format(platforms.Normalize(p))
		}
		cfg, err := parseAddr(entry)
		if err != nil {
			return nil, err
		}
		i, ok := index[cfg.Addr]
		if !ok {
			i = len(out)
			index[cfg.Addr] = i
			out = append(out, Endpoint{Config: cfg})
		}
		if platform != "" && !slices.Contains(out[i].Platforms, platform) {
			out[i].Platforms = append(out[i].Platforms, platform)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("buildkit address: none given")
	}
	return out, nil
}

func parseAddr(s string) (Config, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Config{}, fmt.Errorf("buildkit address %q: %w", s, err)
	}
	q := u.Query()
	cfg := Config{ServerName: q.Get("tlsservername"), CACert: q.Get("tlscacert"),
		Cert: q.Get("tlscert"), Key: q.Get("tlskey"), TLSDir: q.Get("tlsdir")}
	for k := range q {
		switch k {
		case "tlsservername", "tlscacert", "tlscert", "tlskey", "tlsdir":
		default:
			return Config{}, fmt.Errorf("buildkit address %q: unknown option %q (use tlsservername, tlscacert, tlscert, tlskey, tlsdir)", s, k)
		}
	}
	u.RawQuery = ""
	cfg.Addr = u.String()
	cfg.fillTLS()
	if err := cfg.validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// IndexMerger writes one image index holding every manifest of parts (digests
// pushed by digest to ref's repository) and points ref at it, returning the
// index digest. *registry.Client's MergeIndex is one.
type IndexMerger func(ctx context.Context, ref string, parts []string) (string, error)

// Pool spreads builds over several buildkitd, one or more per platform. It
// implements the worker's Builder, and is safe for concurrent use.
//
// A build whose platforms all go to one buildkitd is one solve that pushes the
// index under spec.Ref, as Builder.Build does. When they go to several, each
// buildkitd solves its platforms at the same time and pushes by digest only;
// the pool then merges the results into one OCI index (IndexMerger) and only
// then writes the tag, so no tag ever points at part of a build.
type Pool struct {
	members []*member
	merge   IndexMerger
	// CacheRepository, when set, moves registry caches out of the image's
	// repository: a build whose spec.CacheRepo is host/acme/app keeps its cache
	// in CacheRepository/acme/app. Set it before the first Build.
	CacheRepository string
	// Auth gives every Build and RunTest whose spec has none registry
	// credentials and CAs (see Auth). Set it before the first Build.
	Auth Auth
}

// CacheRepoFor returns where the cache of image goes under repository prefix
// (host[:port][/path]): the image's path without its registry host, below prefix.
func CacheRepoFor(prefix, image string) string {
	if prefix == "" {
		return image
	}
	_, path, ok := strings.Cut(image, "/")
	if !ok {
		path = image
	}
	return strings.TrimRight(prefix, "/") + "/" + path
}

type member struct {
	ep     Endpoint
	b      *Builder
	active atomic.Int64

	once     sync.Once
	emulates []string // platforms its workers offer, asked once
}

// NewPool connects to every endpoint (lazily, as New does). merge is required
// when endpoints name different platforms.
func NewPool(ctx context.Context, eps []Endpoint, merge IndexMerger) (*Pool, error) {
	if len(eps) == 0 {
		return nil, errors.New("buildkit pool: no endpoints")
	}
	p := &Pool{merge: merge}
	for _, ep := range eps {
		b, err := New(ctx, ep.Config)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.members = append(p.members, &member{ep: ep, b: b})
	}
	return p, nil
}

// Close closes every connection.
func (p *Pool) Close() error {
	var errs []error
	for _, m := range p.members {
		errs = append(errs, m.b.Close())
	}
	return errors.Join(errs...)
}

// Ping pings every buildkitd; the first failure names its address.
func (p *Pool) Ping(ctx context.Context) error {
	for _, m := range p.members {
		if err := m.b.Ping(ctx); err != nil {
			return fmt.Errorf("%s: %w", m.ep.Addr, err)
		}
	}
	return nil
}

func (m *member) offers(ctx context.Context, platform string) bool {
	m.once.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ws, err := m.b.c.ListWorkers(ctx)
		if err != nil {
			return
		}
		for _, w := range ws {
			for _, p := range w.Platforms {
				m.emulates = append(m.emulates, platforms.Format(platforms.Normalize(p)))
			}
		}
	})
	return slices.Contains(m.emulates, platform)
}

// pick chooses the buildkitd for platform: the least busy that builds it
// natively; else one that names no platforms; else one whose workers emulate
// it; else the first. native says whether the choice is native.
func (p *Pool) pick(ctx context.Context, platform string) (m *member, native bool) {
	norm := platform
	if pl, err := platforms.Parse(platform); err == nil {
		norm = platforms.Format(platforms.Normalize(pl))
	}
	least := func(ok func(*member) bool) *member {
		var best *member
		for _, m := range p.members {
			if ok(m) && (best == nil || m.active.Load() < best.active.Load()) {
				best = m
			}
		}
		return best
	}
	if m := least(func(m *member) bool { return slices.Contains(m.ep.Platforms, norm) }); m != nil {
		return m, true
	}
	if m := least(func(m *member) bool { return len(m.ep.Platforms) == 0 }); m != nil {
		return m, true
	}
	if m := least(func(m *member) bool { return m.offers(ctx, norm) }); m != nil {
		return m, false
	}
	return p.members[0], false
}

type group struct {
	m         *member
	platforms []string
}

// plan groups the platforms of a build by the buildkitd that builds them, in
// the order of platforms.
func (p *Pool) plan(ctx context.Context, plats []string, log LogFunc) []*group {
	var groups []*group
	for _, pl := range plats {
		m, native := p.pick(ctx, pl)
		if !native {
			log(pl, fmt.Sprintf("No buildkitd builds %s natively: %s builds it under emulation", pl, m.ep.Addr))
		}
		i := slices.IndexFunc(groups, func(g *group) bool { return g.m == m })
		if i < 0 {
			groups = append(groups, &group{m: m})
			i = len(groups) - 1
		}
		groups[i].platforms = append(groups[i].platforms, pl)
	}
	return groups
}

// Build builds spec on the pool and returns the digest of the index spec.Ref
// points at. See Pool for how platforms are spread; Builder.Build for the rest.
// log may be called from several goroutines, never at once.
func (p *Pool) Build(ctx context.Context, spec BuildSpec, log LogFunc) (string, error) {
	if log == nil {
		log = func(string, string) {}
	}
	var mu sync.Mutex
	safeLog := func(platform, text string) {
		mu.Lock()
		defer mu.Unlock()
		log(platform, text)
	}
	if spec.Auth == (Auth{}) {
		spec.Auth = p.Auth
	}
	if spec.CacheRepo != "" {
		spec.CacheRepo = CacheRepoFor(p.CacheRepository, spec.CacheRepo)
	}
	groups := p.plan(ctx, spec.Platforms, safeLog)
	if len(groups) == 1 {
		g := groups[0]
		g.m.active.Add(1)
		defer g.m.active.Add(-1)
		return g.m.b.Build(ctx, spec, safeLog)
	}
	if p.merge == nil {
		return "", errors.New("buildkit pool: platforms on several builders need an index merger")
	}
	repo := repository(spec.Ref)
	parts := make([]string, len(groups))
	eg, egctx := errgroup.WithContext(ctx)
	for i, g := range groups {
		eg.Go(func() error {
			g.m.active.Add(1)
			defer g.m.active.Add(-1)
			s := spec
			s.Platforms = g.platforms
			s.Ref = repo
			s.PushByDigest = true
			what := strings.Join(g.platforms, ", ")
			safeLog("", fmt.Sprintf("Solve of %s started on %s", what, g.m.ep.Addr))
			start := time.Now()
			d, err := g.m.b.Build(egctx, s, safeLog)
			if err != nil {
				return err
			}
			safeLog("", fmt.Sprintf("Solve of %s finished on %s in %s: pushed %s@%s", what, g.m.ep.Addr,
				time.Since(start).Round(10*time.Millisecond), repo, d))
			parts[i] = d
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return "", err
	}
	d, err := p.merge(ctx, spec.Ref, parts)
	if err != nil {
		return "", fmt.Errorf("merging %s: %w", spec.Ref, err)
	}
	safeLog("", fmt.Sprintf("Merged %d solves into the index %s@%s", len(parts), spec.Ref, d))
	return d, nil
}

// RunTest runs spec on the buildkitd that builds spec.Platform (see pick).
func (p *Pool) RunTest(ctx context.Context, spec TestSpec, log LogFunc) (int, error) {
	if spec.Auth == (Auth{}) {
		spec.Auth = p.Auth
	}
	m, _ := p.pick(ctx, spec.Platform)
	m.active.Add(1)
	defer m.active.Add(-1)
	return m.b.RunTest(ctx, spec, log)
}

// repository strips the tag from an image reference: registry:5000/a/b:t → registry:5000/a/b.
func repository(ref string) string {
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i]
	}
	return ref
}
