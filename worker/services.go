package worker

import (
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"go.yaml.in/yaml/v3"
)

// AppImage, as a service's or a test's image in .slipway.yml, is the tested
// image itself: the platform's manifest of the index this build pushed.
const AppImage = "app"

// RunnerName is the name of the runner container in a test Pod; no service
// may take it.
const RunnerName = "runner"

// Caps and defaults of .slipway.yml's services.
const (
	MaxServices       = 10 // services, and services of one test
	MaxServicePorts   = 20 // ports of one service
	MaxServiceTimeout = 10 * time.Minute
	// DefaultReadinessTimeout bounds a readiness check without a timeout.
	DefaultReadinessTimeout = time.Minute
)

// ServiceSpec is one service of .slipway.yml: a container that runs beside a
// test's runner in the test's Pod, on the same localhost.
type ServiceSpec struct {
	// Name is a DNS label (lower-case letters, digits, '-'), unique; tests
	// name it in their services.
	Name string `yaml:"name"`
	// Image is AppImage (the tested image) or an image reference, by tag or
	// digest; an index is resolved to the test platform's manifest.
	Image string `yaml:"image"`
	// Command replaces the image's ENTRYPOINT (a string runs through
	// /bin/sh -c), Args its CMD; unset keeps them.
	Command *Command `yaml:"command"`
	Args    []string `yaml:"args"`
	// Env are variables added to the image's environment.
	Env map[string]string `yaml:"env"`
	// Ports are the TCP ports the service listens on; within one test, no
	// two services may list the same port.
	Ports []int `yaml:"ports"`
	// Readiness says when the service is ready; unset: once it started.
	Readiness *ReadinessSpec `yaml:"readiness"`
	line      int
}

// ReadinessSpec is a service's readiness check: a TCP port accepting a
// connection on the Pod's localhost, or a command run in the service's
// container exiting 0, tried once a second for Timeout (default
// DefaultReadinessTimeout, at most MaxServiceTimeout).
type ReadinessSpec struct {
	Port    int           `yaml:"port"`
	Run     *Command      `yaml:"run"`
	Timeout time.Duration `yaml:"timeout"`
}

// UnmarshalYAML records the entry's line for error messages.
func (s *ServiceSpec) UnmarshalYAML(n *yaml.Node) error {
	type plain ServiceSpec
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*s = ServiceSpec(p)
	s.line = n.Line
	return nil
}

var serviceNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$`)

// validateServices checks the services of cfg and fills their defaults.
func (c *RepoConfig) validateServices() error {
	if len(c.Services) > MaxServices {
		return fmt.Errorf("%s: services: %d services, more than the %d a build may have; list fewer", RepoConfigFile, len(c.Services), MaxServices)
	}
	names := map[string]bool{}
	for i := range c.Services {
		s := &c.Services[i]
		where := fmt.Sprintf("%s: line %d: services[%d]", RepoConfigFile, s.line, i)
		if s.Name != "" {
			where += " (" + s.Name + ")"
		}
		switch {
		case s.Name == "":
			return fmt.Errorf("%s: name is required", where)
		case !serviceNameRE.MatchString(s.Name):
			return fmt.Errorf("%s: name %q is not lower-case letters, digits and '-' (at most 42)", where, s.Name)
		case s.Name == RunnerName:
			return fmt.Errorf("%s: name %q is the test runner's; pick another", where, s.Name)
		case names[s.Name]:
			return fmt.Errorf("%s: name %q is used twice", where, s.Name)
		}
		names[s.Name] = true
		if err := checkImage(s.Image); err != nil {
			return fmt.Errorf("%s: image: %v", where, err)
		}
		if len(s.Env) > MaxTestEnv {
			return fmt.Errorf("%s: env: %d variables, more than the %d a service may have; list fewer", where, len(s.Env), MaxTestEnv)
		}
		if len(s.Args) > MaxTestArgs || (s.Command != nil && len(s.Command.Args) > MaxTestArgs) {
			return fmt.Errorf("%s: command and args: more than the %d arguments a service may have", where, MaxTestArgs)
		}
		if len(s.Ports) > MaxServicePorts {
			return fmt.Errorf("%s: ports: %d ports, more than the %d a service may have", where, len(s.Ports), MaxServicePorts)
		}
		for _, p := range s.Ports {
			if p < 1 || p > 65535 {
				return fmt.Errorf("%s: ports: %d is not a TCP port (1-65535)", where, p)
			}
		}
		if r := s.Readiness; r != nil {
			switch {
			case r.Port != 0 && r.Run != nil:
				return fmt.Errorf("%s: readiness: give a port or run, not both", where)
			case r.Port == 0 && r.Run == nil:
				return fmt.Errorf("%s: readiness: give a port (a TCP port to connect to) or run (a command that exits 0 when ready)", where)
			case r.Port < 0 || r.Port > 65535:
				return fmt.Errorf("%s: readiness: port %d is not a TCP port (1-65535)", where, r.Port)
			case r.Timeout < 0 || r.Timeout > MaxServiceTimeout:
				return fmt.Errorf("%s: readiness: timeout %s is not between 1s and %s", where, r.Timeout, MaxServiceTimeout)
			case r.Timeout == 0:
				r.Timeout = DefaultReadinessTimeout
			}
		}
	}
	return nil
}

// validateTestPod checks what a test says about its Pod: its services, its
// runner image or target.
func (c *RepoConfig) validateTestPod(t *TestSpec, where string) error {
	if len(t.Services) > MaxServices {
		return fmt.Errorf("%s: services: %d services, more than the %d a test may have", where, len(t.Services), MaxServices)
	}
	ports := map[int]string{}
	listed := map[string]bool{}
	for _, n := range t.Services {
		i := slices.IndexFunc(c.Services, func(s ServiceSpec) bool { return s.Name == n })
		if i < 0 {
			return fmt.Errorf("%s: services: %q is not one of the services of %s", where, n, RepoConfigFile)
		}
		if listed[n] {
			return fmt.Errorf("%s: services: %q is listed twice", where, n)
		}
		listed[n] = true
		for _, p := range c.Services[i].Ports {
			if other, ok := ports[p]; ok {
				return fmt.Errorf("%s: services: %s and %s both listen on port %d, and a test's services share localhost", where, other, n, p)
			}
			ports[p] = n
		}
	}
	if t.Image != "" && t.Target != "" {
		return fmt.Errorf("%s: give image or target, not both", where)
	}
	if t.Image != "" {
		if err := checkImage(t.Image); err != nil {
			return fmt.Errorf("%s: image: %v", where, err)
		}
	}
	if t.Target != "" && !targetRE.MatchString(t.Target) {
		return fmt.Errorf("%s: target: %q is not a stage name", where, t.Target)
	}
	return nil
}

func checkImage(image string) error {
	switch image {
	case "":
		return fmt.Errorf("is required: %q (the tested image) or an image reference", AppImage)
	case AppImage:
		return nil
	}
	if _, err := name.ParseReference(image); err != nil {
		return fmt.Errorf("%q is neither %q (the tested image) nor an image reference: %v", image, AppImage, err)
	}
	return nil
}

// TestTargets are the Dockerfile stages the tests run in (TestSpec.Target),
// each once, in file order.
func (c *RepoConfig) TestTargets() []string {
	var out []string
	for _, t := range c.Tests {
		if t.Target != "" && !slices.Contains(out, t.Target) {
			out = append(out, t.Target)
		}
	}
	return out
}

// Service returns the service called name, or nil.
func (c *RepoConfig) Service(name string) *ServiceSpec {
	for i := range c.Services {
		if c.Services[i].Name == name {
			return &c.Services[i]
		}
	}
	return nil
}
