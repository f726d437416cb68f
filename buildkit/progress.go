package buildkit

import (
	"bytes"
	"regexp"
	"strings"

	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"
)

// platformPrefix finds the platform BuildKit puts at the start of vertex names
// in multi-platform builds: "[linux/arm64 2/2] RUN …", "[linux/amd64 internal]
// load metadata for …". The os must start with a letter so that a step counter
// such as "[2/3]" is not taken for a platform.
var platformPrefix = regexp.MustCompile(`^\[([a-z][a-z0-9]*/[a-z0-9_]+(?:/[a-z0-9]+)?)[ \]]`)

// withoutPlatform is a vertex name without its platform, which each log line
// carries already: "[linux/arm64 2/2] RUN …" is "[2/2] RUN …", "[linux/amd64
// internal] load …" is "[internal] load …" and "[linux/arm64] sh -c …" is
// "sh -c …", as BuildKit names the vertices of a one-platform build.
// platform is what platformPrefix matched at the start of name.
func withoutPlatform(name, platform string) string {
	rest := name[len("[")+len(platform):]
	if after, ok := strings.CutPrefix(rest, "]"); ok {
		return strings.TrimLeft(after, " ")
	}
	return "[" + strings.TrimPrefix(rest, " ")
}

// progress turns BuildKit's status stream into plain lines for a LogFunc:
// vertex names when they start, the output of RUN steps, warnings and errors.
// It is used by one goroutine.
type progress struct {
	log      LogFunc
	platform string // for vertices whose name has none; "" if unknown
	vertices map[digest.Digest]*vertex
	// statusDone holds the sub-step ids already logged.
	statusDone map[string]bool
}

type vertex struct {
	name     string
	platform string
	started  bool
	done     bool
	partial  map[int][]byte // unfinished last line per stream
}

// cacheImportVertex starts the name of BuildKit's vertex that imports a
// registry cache: "importing cache manifest from <ref>".
const cacheImportVertex = "importing cache manifest from "

// missingCache reports whether a vertex failed only because the registry
// cache it imports does not exist yet: BuildKit goes on without it, so it is
// no error worth an ERROR line.
func missingCache(name, err string) bool {
	if !strings.Contains(name, cacheImportVertex) {
		return false
	}
	e := strings.ToLower(err)
	return strings.Contains(e, "not found") || strings.Contains(e, "manifest_unknown") || strings.Contains(e, "name_unknown") ||
		strings.Contains(e, "404")
}

func newProgress(log LogFunc, defaultPlatform string) *progress {
	return &progress{log: log, platform: defaultPlatform, vertices: map[digest.Digest]*vertex{}, statusDone: map[string]bool{}}
}

// consume reads ch until it is closed; the Solve or Build call that owns ch
// closes it when it returns, even after a failure or a cancel.
func (p *progress) consume(ch <-chan *client.SolveStatus) {
	for st := range ch {
		p.update(st)
	}
	p.flushAll()
}

func (p *progress) vertex(d digest.Digest) *vertex {
	v, ok := p.vertices[d]
	if !ok {
		v = &vertex{platform: p.platform, partial: map[int][]byte{}}
		p.vertices[d] = v
	}
	return v
}

func (p *progress) update(st *client.SolveStatus) {
	for _, sv := range st.Vertexes {
		v := p.vertex(sv.Digest)
		if sv.Name != "" && v.name == "" {
			v.name = sv.Name
			if m := platformPrefix.FindStringSubmatch(sv.Name); m != nil {
				v.platform = m[1]
				v.name = withoutPlatform(sv.Name, m[1])
			}
		}
		if sv.Started != nil && !v.started {
			v.started = true
			if sv.Cached {
				p.lines(v.platform, "CACHED "+v.name)
			} else {
				p.lines(v.platform, v.name)
			}
		}
		if sv.Completed != nil && !v.done {
			v.done = true
			p.flush(v)
			switch {
			case sv.Error == "":
			case strings.Contains(sv.Error, "context canceled"):
				p.lines(v.platform, "CANCELED "+v.name)
			case missingCache(v.name, sv.Error):
				ref := strings.TrimPrefix(v.name[strings.Index(v.name, cacheImportVertex):], cacheImportVertex)
				p.lines(v.platform, "No registry cache at "+ref+" yet (normal for a first build): this build runs without it and fills it.")
			default:
				p.lines(v.platform, "ERROR "+v.name+": "+sv.Error)
			}
		}
	}
	for _, s := range st.Statuses {
		// Sub-steps such as "pushing layers" or "pushing manifest for …"
		// are worth a line once they are done; their byte counts are not.
		if s.Completed != nil && s.ID != "" && !p.statusDone[s.ID] {
			p.statusDone[s.ID] = true
			p.log(p.vertex(s.Vertex).platform, strings.TrimSuffix(s.ID, ":")+" done")
		}
	}
	for _, l := range st.Logs {
		v := p.vertex(l.Vertex)
		data := append(v.partial[l.Stream], l.Data...)
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break
			}
			p.log(v.platform, string(bytes.TrimSuffix(data[:i], []byte("\r"))))
			data = data[i+1:]
		}
		v.partial[l.Stream] = bytes.Clone(data)
	}
	for _, w := range st.Warnings {
		v := p.vertex(w.Vertex)
		p.lines(v.platform, "WARNING: "+string(w.Short))
	}
}

// lines logs s, which may hold several lines, line by line.
func (p *progress) lines(platform, s string) {
	for line := range strings.SplitSeq(strings.TrimRight(s, "\n"), "\n") {
		p.log(platform, line)
	}
}

// flush logs what a vertex wrote after its last line break.
func (p *progress) flush(v *vertex) {
	for stream, data := range v.partial {
		if len(data) > 0 {
			p.log(v.platform, string(data))
		}
		delete(v.partial, stream)
	}
}

func (p *progress) flushAll() {
	for _, v := range p.vertices {
		p.flush(v)
	}
}
