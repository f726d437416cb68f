package worker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/semver"

	"github.com/slipway-ci/slipway"
)

// RepoConfigFile is the name of the per-repository build file at the repository root.
const RepoConfigFile = ".slipway.yml"

// Cache modes of .slipway.yml's cache field.
const (
	CacheMax = "max" // export every layer, also those of intermediate stages
	CacheMin = "min" // export only the layers of the final image
	CacheOff = "off" // neither import nor export a registry cache
)

// Provenance modes of .slipway.yml's provenance field.
const (
	ProvenanceMin = "min"
	ProvenanceMax = "max"
	ProvenanceOff = "off"
)

// DefaultBuildTimeout bounds a build whose .slipway.yml sets no timeout.
const DefaultBuildTimeout = 60 * time.Minute

// DefaultTags are the tag templates of a repository whose .slipway.yml has none:
// the branch name for a branch push, the tag name for a tag push.
var DefaultTags = []string{"{{branch}}", "{{tag}}"}

// RepoConfig is a repository's .slipway.yml. A missing file means the defaults.
type RepoConfig struct {
	Platforms  []string          `yaml:"platforms"`
	Dockerfile string            `yaml:"dockerfile"`
	Context    string            `yaml:"context"`
	Target     string            `yaml:"target"`
	BuildArgs  map[string]string `yaml:"build_args"`
	// Secrets names build secrets stored in slipway; each reaches the build only
	// as a BuildKit secret mount (RUN --mount=type=secret,id=NAME).
	Secrets []string `yaml:"secrets"`
	// Tags are templates of the tags added once the tests pass (see RenderTags).
	Tags       []string   `yaml:"tags"`
	Cache      string     `yaml:"cache"`
	Provenance string     `yaml:"provenance"`
	Tests      []TestSpec `yaml:"tests"`
	// Services are the containers tests may run beside their runner, in one
	// Pod per test and platform (see ServiceSpec, services.go).
	Services []ServiceSpec `yaml:"services"`
	Branches []string      `yaml:"branches"`
	Timeout  time.Duration `yaml:"timeout"`
	// Integration, when set, asks an external system to test the pushed image
	// after the tests above passed (see integration.go).
	Integration *IntegrationSpec `yaml:"integration"`
	// Release decides which tag pushes are releases (see ReleaseSpec); always
	// set after parsing.
	Release *ReleaseSpec `yaml:"release"`
	// Submodules, when false, leaves the submodules out of the checkout;
	// nil (unset) means true.
	Submodules *bool `yaml:"submodules"`
	// Chart is the folder of the app's Helm chart ("deploy/chart"), or empty:
	// every build lints and templates it, a release also pushes it (chart.go).
	Chart string `yaml:"chart"`
}

// WantSubmodules reports whether the checkout includes the submodules: unless
// submodules: false.
func (c *RepoConfig) WantSubmodules() bool { return c.Submodules == nil || *c.Submodules }

// TestSpec is one integration test: a command run inside the pushed image,
// or inside another image or a test stage of the Dockerfile, alone through
// BuildKit or, when it names services, in a Pod beside them.
type TestSpec struct {
	Name string `yaml:"name"`
	// Run is a string (run through /bin/sh -c) or a list (exec'd as is).
	Run     Command           `yaml:"run"`
	Env     map[string]string `yaml:"env"`
	Timeout time.Duration     `yaml:"timeout"`
	// Platforms limits the test to some of the built platforms; empty: all.
	Platforms []string `yaml:"platforms"`
	// Services names services of .slipway.yml that run beside the test, in
	// one Pod with it; the test then runs through the Pod runtime (Podman).
	Services []string `yaml:"services"`
	// Image is the runner's image: AppImage (the default, the tested image)
	// or an image reference.
	Image string `yaml:"image"`
	// Target, instead of Image, is a stage of the Dockerfile (such as test)
	// built in the same build for the same platforms, pushed by digest only
	// (never tagged), that the test runs in.
	Target string `yaml:"target"`
	// JUnit is the absolute path of a JUnit XML report the runner writes
	// inside its container; slipway copies it out after the runner exits
	// (passed or failed) and stores its test cases. A test with junit runs
	// in a Pod, with or without services.
	JUnit string `yaml:"junit"`
	line  int
}

// InPod reports whether the test runs in a Pod: when it has services or a
// JUnit report (only the Pod runtime copies a file out of the runner).
func (t TestSpec) InPod() bool { return len(t.Services) > 0 || t.JUnit != "" }

// RunsOn reports whether the test runs on platform.
func (t TestSpec) RunsOn(platform string) bool {
	return len(t.Platforms) == 0 || slices.Contains(t.Platforms, platform)
}

// Command is a test command: Shell when given as a string, Args when a list.
type Command struct {
	Args []string
}

// UnmarshalYAML accepts a string or a list of strings.
func (c *Command) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if strings.TrimSpace(n.Value) == "" {
			return fmt.Errorf("line %d: run is empty", n.Line)
		}
		c.Args = []string{"/bin/sh", "-c", n.Value}
		return nil
	case yaml.SequenceNode:
		var args []string
		if err := n.Decode(&args); err != nil {
			return err
		}
		if len(args) == 0 || args[0] == "" {
			return fmt.Errorf("line %d: run is an empty list", n.Line)
		}
		c.Args = args
		return nil
	}
	return fmt.Errorf("line %d: run must be a string or a list of strings", n.Line)
}

// UnmarshalYAML records the entry's line for error messages.
func (t *TestSpec) UnmarshalYAML(n *yaml.Node) error {
	type plain TestSpec
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*t = TestSpec(p)
	t.line = n.Line
	return nil
}

var (
	platformRE  = regexp.MustCompile(`^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$`)
	buildArgRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	targetRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	placeholder = regexp.MustCompile(`\{\{\s*([a-z_.]+)\s*\}\}`)
	tagRE       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

// TagVars are the placeholders a tag template may use.
var TagVars = []string{"branch", "tag", "ref_name", "sha", "short_sha",
	"semver.version", "semver.major", "semver.minor", "semver.patch"}

// Caps on what one .slipway.yml may ask for. Each bounds the work, memory or
// log a single push can cause; a file over one fails the build with the
// field and the cap (see checkCaps).
const (
	MaxPlatforms     = 16      // platforms
	MaxBuildArgs     = 100     // build_args entries
	MaxBuildArgBytes = 8 << 10 // one build_args value
	MaxSecrets       = 50      // secrets
	MaxTags          = 32      // tags templates
	MaxBranches      = 100     // branches patterns
	MaxTests         = 100     // tests
	MaxTestEnv       = 100     // env entries of one test
	MaxTestArgs      = 1000    // run list items of one test
)

// ParseRepoConfig reads a .slipway.yml of at most RepoConfigMaxBytes. Errors
// name the file, the line and the field, including for a list over its cap
// (MaxTests and the other Max constants).
func ParseRepoConfig(data []byte) (*RepoConfig, error) {
	if len(data) > RepoConfigMaxBytes {
		return nil, tooBig(RepoConfigFile, int64(len(data)), RepoConfigMaxBytes)
	}
	cfg := &RepoConfig{}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %s", RepoConfigFile, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) > 0 {
		if err := checkShape(doc.Content[0], reflect.TypeFor[RepoConfig](), ""); err != nil {
			return nil, fmt.Errorf("%s: %w", RepoConfigFile, err)
		}
		if err := doc.Decode(cfg); err != nil {
			return nil, fmt.Errorf("%s: %s", RepoConfigFile, decodeError(err))
		}
	}
	lines := fieldLines(&doc)
	bad := func(field, format string, args ...any) error {
		where := RepoConfigFile + ": "
		if l := lines[field]; l > 0 {
			where += fmt.Sprintf("line %d: ", l)
		}
		return fmt.Errorf("%s%s: %s", where, field, fmt.Sprintf(format, args...))
	}
	if err := cfg.checkCaps(bad); err != nil {
		return nil, err
	}
	if len(cfg.Platforms) == 0 {
		cfg.Platforms = append([]string(nil), slipway.DefaultPlatforms...)
	}
	if msg := checkList(cfg.Platforms, platformRE, "is not os/arch[/variant], e.g. linux/arm64"); msg != "" {
		return nil, bad("platforms", "%s", msg)
	}
	if cfg.Dockerfile == "" {
		cfg.Dockerfile = "Dockerfile"
	}
	if cfg.Context == "" {
		cfg.Context = "."
	}
	for _, f := range []struct{ field, p string }{{"dockerfile", cfg.Dockerfile}, {"context", cfg.Context}} {
		if path.IsAbs(f.p) || strings.HasPrefix(path.Clean(f.p), "..") {
			return nil, bad(f.field, "%q must be a path inside the repository", f.p)
		}
	}
	if cfg.Target != "" && !targetRE.MatchString(cfg.Target) {
		return nil, bad("target", "%q is not a stage name", cfg.Target)
	}
	for k := range cfg.BuildArgs {
		if !buildArgRE.MatchString(k) {
			return nil, bad("build_args", "%q is not a build argument name (letters, digits, _)", k)
		}
	}
	if msg := checkList(cfg.Secrets, slipway.SecretNameRE, "is not a secret name (letters, digits, _, at most 100)"); msg != "" {
		return nil, bad("secrets", "%s", msg)
	}
	if cfg.Tags == nil {
		cfg.Tags = append([]string(nil), DefaultTags...)
	}
	for _, t := range cfg.Tags {
		if err := checkTagTemplate(t); err != nil {
			return nil, bad("tags", "%v", err)
		}
	}
	switch cfg.Cache {
	case "":
		cfg.Cache = CacheMax
	case CacheMax, CacheMin, CacheOff:
	default:
		return nil, bad("cache", "%q is not max, min or off", cfg.Cache)
	}
	switch cfg.Provenance {
	case "":
		cfg.Provenance = ProvenanceMin
	case ProvenanceMin, ProvenanceMax, ProvenanceOff:
	default:
		return nil, bad("provenance", "%q is not min, max or off", cfg.Provenance)
	}
	for _, b := range cfg.Branches {
		if _, err := path.Match(b, ""); err != nil || b == "" {
			return nil, bad("branches", "%q is not a branch name or glob such as release/*", b)
		}
	}
	switch {
	case cfg.Timeout < 0:
		return nil, bad("timeout", "must be positive, such as 30m")
	case cfg.Timeout == 0:
		cfg.Timeout = DefaultBuildTimeout
	}
	if err := cfg.validateServices(); err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for i, t := range cfg.Tests {
		where := fmt.Sprintf("%s: line %d: tests[%d]", RepoConfigFile, t.line, i)
		if t.Name == "" {
			return nil, fmt.Errorf("%s: name is required", where)
		}
		if names[t.Name] {
			return nil, fmt.Errorf("%s: name %q is used twice", where, t.Name)
		}
		names[t.Name] = true
		if len(t.Run.Args) == 0 {
			return nil, fmt.Errorf("%s (%s): run is required", where, t.Name)
		}
		if t.Timeout < 0 {
			return nil, fmt.Errorf("%s (%s): timeout must be positive", where, t.Name)
		}
		if t.Timeout == 0 {
			cfg.Tests[i].Timeout = 10 * time.Minute
		}
		if j := t.JUnit; j != "" && (!path.IsAbs(j) || path.Clean(j) != j || j == "/") {
			return nil, fmt.Errorf("%s (%s): junit: %q is not an absolute path of a file in the runner, such as /tmp/junit.xml", where, t.Name, j)
		}
		if err := cfg.validateTestPod(&cfg.Tests[i], fmt.Sprintf("%s (%s)", where, t.Name)); err != nil {
			return nil, err
		}
		for _, p := range t.Platforms {
			if !slices.Contains(cfg.Platforms, p) {
				return nil, fmt.Errorf("%s (%s): platforms: %q is not built; built are %s", where, t.Name, p, strings.Join(cfg.Platforms, ", "))
			}
		}
	}
	if err := cfg.Integration.validate(); err != nil {
		return nil, fmt.Errorf("%s: integration: %w", RepoConfigFile, err)
	}
	if cfg.Release == nil {
		cfg.Release = &ReleaseSpec{}
	}
	if err := cfg.Release.validate(); err != nil {
		return nil, bad("release", "%v", err)
	}
	if err := ValidateChartPath(cfg.Chart); err != nil {
		return nil, fmt.Errorf("%s: %w", RepoConfigFile, err)
	}
	return cfg, nil
}

// checkShape refuses a YAML node that does not fit Go type t before it is
// decoded, so that no error names a Go type: a key that is no field of a
// struct ("line 1: unknown field "plaforms" (did you mean "platforms"? fields
// here: …)"), a list or map where a scalar goes or the other way round
// ("line 3: tests must be a list of tests, not a string"), and a scalar the
// type cannot hold ("line 2: timeout must be a duration such as 30m, not
// "soon""). at is the field's path, such as tests[0].env; "" at the top.
// Types with their own UnmarshalYAML check themselves, except
// plainUnmarshalers.
func checkShape(n *yaml.Node, t reflect.Type, at string) error {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Tag == "!!null" || (!plainUnmarshalers[t] && reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]())) {
		return nil
	}
	want := shapeName(t, at)
	mismatch := func() error {
		name := at
		if name == "" {
			name = "the file"
		}
		return fmt.Errorf("line %d: %s must be %s, not %s", n.Line, name, want, nodeName(n))
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return mismatch()
		}
		fields := map[string]reflect.Type{}
		for f := range t.Fields() {
			if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); f.IsExported() && tag != "" && tag != "-" {
				fields[tag] = f.Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			if key.Tag == "!!merge" { // <<: *anchor brings the anchor's fields here
				items := []*yaml.Node{val}
				if val.Kind == yaml.SequenceNode {
					items = val.Content
				}
				for _, item := range items {
					if err := checkShape(item, t, at); err != nil {
						return err
					}
				}
				continue
			}
			ft, ok := fields[key.Value]
			if !ok {
				return unknownField(key, at, slices.Sorted(maps.Keys(fields)))
			}
			if err := checkShape(val, ft, joinPath(at, key.Value)); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return mismatch()
		}
		for i, item := range n.Content {
			if err := checkShape(item, t.Elem(), fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return mismatch()
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkShape(n.Content[i+1], t.Elem(), joinPath(at, n.Content[i].Value)); err != nil {
				return err
			}
		}
	default:
		if n.Kind != yaml.ScalarNode || n.Decode(reflect.New(t).Interface()) != nil {
			return mismatch()
		}
	}
	return nil
}

// plainUnmarshalers are the types whose UnmarshalYAML decodes the node as the
// plain struct (and records its line), so checkShape checks them like one.
var plainUnmarshalers = map[reflect.Type]bool{
	reflect.TypeFor[TestSpec]():    true,
	reflect.TypeFor[ServiceSpec](): true,
}

func joinPath(at, name string) string {
	if at == "" {
		return name
	}
	return at + "." + name
}

// shapeName words what a value of t looks like in YAML, for the field at.
func shapeName(t reflect.Type, at string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return "a duration such as 30m"
	case t.Kind() == reflect.Struct:
		return "a map of fields"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return "a list of " + at[strings.LastIndex(at, ".")+1:] // tests, services
	case t.Kind() == reflect.Slice:
		return "a list of " + plural(shapeName(t.Elem(), at))
	case t.Kind() == reflect.Map:
		return "a map of names to " + plural(shapeName(t.Elem(), at))
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "a whole number"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	}
	return "a value of another kind"
}

func plural(s string) string {
	if rest, ok := strings.CutPrefix(s, "a "); ok && !strings.Contains(rest, " ") {
		return rest + "s"
	}
	return "values that are each " + s
}

// nodeName words what the YAML node n is: "a list", "a map", "the string
// "soon"".
func nodeName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a map"
	}
	switch n.Tag {
	case "!!int", "!!float":
		return "the number " + n.Value
	case "!!bool":
		return n.Value
	case "!!str":
		return fmt.Sprintf("the string %q", n.Value)
	}
	return fmt.Sprintf("%q", n.Value)
}

// unknownField words the error of a key that is none of fields, with the
// closest field as a suggestion when it is a likely typo.
func unknownField(key *yaml.Node, at string, fields []string) error {
	where := fmt.Sprintf("line %d: ", key.Line)
	if at != "" {
		where += at + ": "
	}
	hint, best := "", 0
	for _, f := range fields {
		d := editDistance(strings.ToLower(key.Value), f)
		if (d <= 1 || d*3 <= len(key.Value)) && (hint == "" || d < best) {
			hint, best = f, d
		}
	}
	if hint != "" {
		hint = fmt.Sprintf("did you mean %q? ", hint)
	}
	return fmt.Errorf("%sunknown field %q (%sfields here: %s)", where, key.Value, hint, strings.Join(fields, ", "))
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// yamlTypeRE matches the Go type at the end of a yaml.v3 type error.
var yamlTypeRE = regexp.MustCompile(`^(line \d+: )cannot unmarshal !!\w+ (.*) into \S+$`)

// decodeError words an error of decoding a node that passed checkShape
// (which should leave none) without the Go types yaml.v3 names.
func decodeError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		return yamlTypeRE.ReplaceAllString(te.Errors[0], "${1}${2} is not a valid value here")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

// checkCaps refuses a list or map of cfg over its cap. bad words the error
// of a top-level field.
func (c *RepoConfig) checkCaps(bad func(field, format string, args ...any) error) error {
	for _, f := range []struct {
		field, what string
		n, max      int
	}{
		{"platforms", "platforms", len(c.Platforms), MaxPlatforms},
		{"build_args", "build arguments", len(c.BuildArgs), MaxBuildArgs},
		{"secrets", "secrets", len(c.Secrets), MaxSecrets},
		{"tags", "tag templates", len(c.Tags), MaxTags},
		{"branches", "branch patterns", len(c.Branches), MaxBranches},
		{"tests", "tests", len(c.Tests), MaxTests},
	} {
		if f.n > f.max {
			return bad(f.field, "%d %s, more than the %d a build may have; list fewer", f.n, f.what, f.max)
		}
	}
	for k, v := range c.BuildArgs {
		if len(v) > MaxBuildArgBytes {
			return bad("build_args", "the value of %s is %d bytes, over the %s a build argument may hold; put large data in a file of the repository", k, len(v), byteSize(MaxBuildArgBytes))
		}
	}
	for i, t := range c.Tests {
		where := fmt.Sprintf("%s: line %d: tests[%d]", RepoConfigFile, t.line, i)
		if len(t.Env) > MaxTestEnv {
			return fmt.Errorf("%s: env: %d variables, more than the %d a test may have; list fewer", where, len(t.Env), MaxTestEnv)
		}
		if len(t.Run.Args) > MaxTestArgs {
			return fmt.Errorf("%s: run: %d arguments, more than the %d a test may have; use a script in the image", where, len(t.Run.Args), MaxTestArgs)
		}
	}
	return nil
}

// checkList returns what is wrong with a list whose items must match re and
// be unique, or "" when nothing is.
func checkList(list []string, re *regexp.Regexp, notMatching string) string {
	seen := map[string]bool{}
	for _, v := range list {
		if !re.MatchString(v) {
			return fmt.Sprintf("%q %s", v, notMatching)
		}
		if seen[v] {
			return fmt.Sprintf("%q is listed twice", v)
		}
		seen[v] = true
	}
	return ""
}

// fieldLines maps each top-level key of a parsed YAML document to its line.
func fieldLines(doc *yaml.Node) map[string]int {
	out := map[string]int{}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return out
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		out[m.Content[i].Value] = m.Content[i].Line
	}
	return out
}

func checkTagTemplate(t string) error {
	if strings.TrimSpace(t) == "" {
		return errors.New("a tag template is empty")
	}
	for _, m := range placeholder.FindAllStringSubmatch(t, -1) {
		if !contains(TagVars, m[1]) {
			return fmt.Errorf("%q uses unknown placeholder {{%s}}; use %s", t, m[1], strings.Join(TagVars, ", "))
		}
	}
	rest := placeholder.ReplaceAllString(t, "x")
	if strings.Contains(rest, "{{") || strings.Contains(rest, "}}") || !tagRE.MatchString(rest) {
		return fmt.Errorf("%q does not make a valid tag (letters, digits, _ . -, at most 128)", t)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TagValues are what a ref and commit give the placeholders of tag templates.
func TagValues(ref, commit string) map[string]string {
	v := map[string]string{"sha": commit, "short_sha": commit, "ref_name": slipway.TagForRef(ref)}
	if len(commit) > 7 {
		v["short_sha"] = commit[:7]
	}
	if b, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		v["branch"] = slipway.TagForRef(b)
	}
	if t, ok := strings.CutPrefix(ref, "refs/tags/"); ok {
		v["tag"] = slipway.TagForRef(t)
		sv := t
		if !strings.HasPrefix(sv, "v") {
			sv = "v" + sv
		}
		if semver.IsValid(sv) {
			v["semver.version"] = strings.TrimPrefix(semver.Canonical(sv), "v")
			// Like docker/metadata-action: a pre-release gets no major or minor tag,
			// so v2.0.0-rc1 never moves "2".
			if semver.Prerelease(sv) == "" {
				parts := strings.SplitN(strings.TrimPrefix(semver.Canonical(sv), "v"), ".", 3)
				v["semver.major"], v["semver.minor"], v["semver.patch"] = parts[0], parts[1], parts[2]
			}
		}
	}
	return v
}

// RenderTags fills the templates with vals. A template that uses a placeholder
// without a value for this push (such as {{tag}} on a branch push) makes no tag;
// duplicates are dropped; the order is kept.
func RenderTags(templates []string, vals map[string]string) []string {
	var out []string
	for _, t := range templates {
		empty := false
		s := placeholder.ReplaceAllStringFunc(t, func(m string) string {
			val := vals[placeholder.FindStringSubmatch(m)[1]]
			if val == "" {
				empty = true
			}
			return val
		})
		if empty || !tagRE.MatchString(s) || contains(out, s) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// BranchAllowed reports whether a push of ref is built under the branches list:
// tags always are, branches when the list is empty or one pattern matches.
func (c *RepoConfig) BranchAllowed(ref string) bool {
	b, ok := strings.CutPrefix(ref, "refs/heads/")
	if !ok || len(c.Branches) == 0 {
		return true
	}
	for _, p := range c.Branches {
		if ok, _ := path.Match(p, b); ok {
			return true
		}
	}
	return false
}

// LoadRepoConfig reads dir/.slipway.yml, or returns the defaults when it is
// absent. The file is read through os.Root and must be a regular file (not a
// symlink, folder or device) of at most RepoConfigMaxBytes; anything else is
// an error naming it that the repository's author fixes.
func LoadRepoConfig(dir string) (*RepoConfig, error) {
	root, err := openCheckout(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	data, err := readCheckoutFile(root, RepoConfigFile, RepoConfigMaxBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return ParseRepoConfig(nil)
	} else if err != nil {
		return nil, err
	}
	return ParseRepoConfig(data)
}
