package worker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/slipway-ci/slipway"
)

// RepoConfigFile is the name of the per-repository build file at the repository root.
const RepoConfigFile = ".slipway.yml"

// RepoConfig is a repository's .slipway.yml. A missing file means the defaults.
type RepoConfig struct {
	Platforms  []string   `yaml:"platforms"`
	Dockerfile string     `yaml:"dockerfile"`
	Context    string     `yaml:"context"`
	Tests      []TestSpec `yaml:"tests"`
	// Integration, when set, asks an external system to test the pushed image
	// after the tests above passed (see integration.go).
	Integration *IntegrationSpec `yaml:"integration"`
}

// TestSpec is one integration test: a command run inside the pushed image.
type TestSpec struct {
	Name string `yaml:"name"`
	// Run is a string (run through /bin/sh -c) or a list (exec'd as is).
	Run     Command           `yaml:"run"`
	Env     map[string]string `yaml:"env"`
	Timeout time.Duration     `yaml:"timeout"`
	// Platforms limits the test to some of the built platforms; empty: all.
	Platforms []string `yaml:"platforms"`
	line      int
}

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

var platformRE = regexp.MustCompile(`^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$`)

// ParseRepoConfig reads a .slipway.yml. Errors name the file, the line and the field.
func ParseRepoConfig(data []byte) (*RepoConfig, error) {
	cfg := &RepoConfig{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %s", RepoConfigFile, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(cfg.Platforms) == 0 {
		cfg.Platforms = append([]string(nil), slipway.DefaultPlatforms...)
	}
	seen := map[string]bool{}
	for _, p := range cfg.Platforms {
		if !platformRE.MatchString(p) {
			return nil, fmt.Errorf("%s: platforms: %q is not os/arch[/variant], e.g. linux/arm64", RepoConfigFile, p)
		}
		if seen[p] {
			return nil, fmt.Errorf("%s: platforms: %q is listed twice", RepoConfigFile, p)
		}
		seen[p] = true
	}
	if cfg.Dockerfile == "" {
		cfg.Dockerfile = "Dockerfile"
	}
	if cfg.Context == "" {
		cfg.Context = "."
	}
	for field, p := range map[string]string{"dockerfile": cfg.Dockerfile, "context": cfg.Context} {
		if path.IsAbs(p) || strings.HasPrefix(path.Clean(p), "..") {
			return nil, fmt.Errorf("%s: %s: %q must be a path inside the repository", RepoConfigFile, field, p)
		}
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
		for _, p := range t.Platforms {
			if !seen[p] {
				return nil, fmt.Errorf("%s (%s): platforms: %q is not built; built are %s", where, t.Name, p, strings.Join(cfg.Platforms, ", "))
			}
		}
	}
	if err := cfg.Integration.validate(); err != nil {
		return nil, fmt.Errorf("%s: integration: %w", RepoConfigFile, err)
	}
	return cfg, nil
}

// LoadRepoConfig reads dir/.slipway.yml, or returns the defaults when it is absent.
func LoadRepoConfig(dir string) (*RepoConfig, error) {
	data, err := os.ReadFile(filepath.Join(dir, RepoConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		return ParseRepoConfig(nil)
	} else if err != nil {
		return nil, fmt.Errorf("reading %s: %w", RepoConfigFile, err)
	}
	return ParseRepoConfig(data)
}
