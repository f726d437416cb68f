// Package pod runs one integration test on one platform as a Pod: the
// services a test needs (the tested image among them, when it is a service)
// and the test's runner, sharing localhost, from platform-specific image
// digests.
//
// The Pod is described once, as a Kubernetes core/v1 Pod (Spec.Pod): that
// description is the one source for every Runtime. Readiness is the startup
// probe of each service container (tcpSocket or exec, once a second, for the
// service's timeout), and the annotation RunnerAnnotation names the runner
// container. Podman (NewPodman) runs it on one host now; a Kubernetes
// Runtime, creating the same Pod through the API with a kubernetes.io/arch
// node selector, is the planned second implementation (see the README).
package pod

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// Labels and annotations of a test Pod. Label values are sanitized to what
// Kubernetes allows (Label).
const (
	// LabelManaged marks every Pod slipway makes ("true").
	LabelManaged = "slipway.dev/managed"
	// LabelBuild is the build's id.
	LabelBuild = "slipway.dev/build-id"
	// LabelTest is the test's name.
	LabelTest = "slipway.dev/test"
	// LabelPlatform is the platform, such as linux_arm64.
	LabelPlatform = "slipway.dev/platform"
	// LabelWorkerHost and LabelWorkerPID name the worker process that made
	// the Pod, so that a worker starting on the same host removes the Pods
	// of a worker that was killed, and only those (workers may share a host).
	LabelWorkerHost = "slipway.dev/worker-host"
	LabelWorkerPID  = "slipway.dev/worker-pid"
	// RunnerAnnotation names the runner container of the Pod.
	RunnerAnnotation = "slipway.dev/runner"
	// ReportAnnotation, when set, is the absolute path of a file inside the
	// runner container (a JUnit XML report) that the Runtime copies out
	// after the runner exits (see Runtime.Run).
	ReportAnnotation = "slipway.dev/report"
)

// Container is one container of a test Pod.
type Container struct {
	// Name is the container's name, a DNS label (service names are checked
	// by .slipway.yml's validation).
	Name string
	// Image is the image, best by digest of the platform's manifest
	// (repo@sha256:…): a tag could move, and a tag of an index would let the
	// runtime pick the platform.
	Image string
	// Command replaces the image's ENTRYPOINT and Args its CMD; nil keeps them.
	Command, Args []string
	// Env holds the variables added to the image's environment.
	Env map[string]string
	// Ports are the TCP ports the container listens on (informative: every
	// container of the Pod shares its localhost).
	Ports []int
	// Ready is the readiness check of a service; nil: ready once started.
	// Ignored for the runner.
	Ready *Readiness
}

// Readiness says when a service is ready: a TCP port that accepts a
// connection on the Pod's localhost, or a command run in the container
// that exits 0; tried once a second until Timeout (at least one second).
type Readiness struct {
	TCPPort int
	Command []string
	Timeout time.Duration
}

// Limits are the resource limits of each container, in Kubernetes quantity
// syntax: CPU "2" or "500m", Memory "1Gi". Empty: no limit.
type Limits struct {
	CPU, Memory string
}

// Spec is one test on one platform.
type Spec struct {
	// Name is the Pod's name: a DNS label of at most 63 characters, unique
	// among the Pods of the runtime (Name makes one).
	Name string
	// Labels are added to the Pod's labels (see the Label constants).
	Labels map[string]string
	// Platform is the platform of every image, such as linux/arm64.
	Platform string
	// Services start first, in order; the runner starts once all are ready.
	Services []Container
	// Runner runs the test; its exit code is the test's.
	Runner Container
	// Limits apply to every container.
	Limits Limits
	// Report is an absolute path inside the runner container of a file to
	// copy out once the runner exits (ReportAnnotation); "" for none.
	Report string
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Pod describes spec as a Kubernetes Pod: restartPolicy Never, the services
// and then the runner as containers (imagePullPolicy IfNotPresent), a
// startupProbe per service with readiness, the limits on every container,
// the labels, and RunnerAnnotation naming the runner. An invalid spec (a
// name that is not a DNS label, two containers of one name, a bad limit, a
// readiness check that is neither a port nor a command) is an error naming
// the field.
func (s Spec) Pod() (*corev1.Pod, error) {
	if len(s.Name) > 63 || !dnsLabel.MatchString(s.Name) {
		return nil, fmt.Errorf("pod name %q is not a DNS label", s.Name)
	}
	if s.Report != "" && (!path.IsAbs(s.Report) || path.Clean(s.Report) != s.Report || s.Report == "/") {
		return nil, fmt.Errorf("report %q is not a clean absolute path of a file", s.Report)
	}
	limits := corev1.ResourceList{}
	for _, l := range []struct {
		name  corev1.ResourceName
		value string
	}{{corev1.ResourceCPU, s.Limits.CPU}, {corev1.ResourceMemory, s.Limits.Memory}} {
		if l.value == "" {
			continue
		}
		q, err := resource.ParseQuantity(l.value)
		if err != nil {
			return nil, fmt.Errorf("pod limit %s %q: %w", l.name, l.value, err)
		}
		limits[l.name] = q
	}
	p := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        s.Name,
			Labels:      map[string]string{LabelManaged: "true"},
			Annotations: map[string]string{RunnerAnnotation: s.Runner.Name},
		},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever},
	}
	for k, v := range s.Labels {
		p.Labels[k] = Label(v)
	}
	if s.Report != "" {
		p.Annotations[ReportAnnotation] = s.Report
	}
	if arch, ok := strings.CutPrefix(s.Platform, "linux/"); ok {
		// Read by a Kubernetes runtime; Podman ignores it and runs the
		// platform's images under QEMU where they are foreign.
		p.Spec.NodeSelector = map[string]string{"kubernetes.io/arch": strings.SplitN(arch, "/", 2)[0]}
	}
	seen := map[string]bool{}
	for i, c := range append(slices.Clone(s.Services), s.Runner) {
		runner := i == len(s.Services)
		if !dnsLabel.MatchString(c.Name) || len(c.Name) > 63 {
			return nil, fmt.Errorf("container name %q is not a DNS label", c.Name)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("container name %q is used twice", c.Name)
		}
		seen[c.Name] = true
		if c.Image == "" {
			return nil, fmt.Errorf("container %s: image is required", c.Name)
		}
		ct := corev1.Container{
			Name: c.Name, Image: c.Image, Command: c.Command, Args: c.Args,
			ImagePullPolicy: corev1.PullIfNotPresent,
		}
		if len(limits) > 0 {
			ct.Resources.Limits = limits.DeepCopy()
		}
		keys := make([]string, 0, len(c.Env))
		for k := range c.Env {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			ct.Env = append(ct.Env, corev1.EnvVar{Name: k, Value: c.Env[k]})
		}
		for _, port := range c.Ports {
			ct.Ports = append(ct.Ports, corev1.ContainerPort{ContainerPort: int32(port), Protocol: corev1.ProtocolTCP})
		}
		if c.Ready != nil && !runner {
			probe, err := c.Ready.probe()
			if err != nil {
				return nil, fmt.Errorf("container %s: %w", c.Name, err)
			}
			ct.StartupProbe = probe
		}
		p.Spec.Containers = append(p.Spec.Containers, ct)
	}
	return p, nil
}

func (r *Readiness) probe() (*corev1.Probe, error) {
	secs := max(1, int32((r.Timeout+time.Second-1)/time.Second))
	probe := &corev1.Probe{PeriodSeconds: 1, TimeoutSeconds: 1, FailureThreshold: secs}
	switch {
	case r.TCPPort > 0 && len(r.Command) > 0:
		return nil, errors.New("readiness has both a port and a command")
	case r.TCPPort > 0:
		if r.TCPPort > 65535 {
			return nil, fmt.Errorf("readiness port %d is not a TCP port", r.TCPPort)
		}
		probe.TCPSocket = &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(r.TCPPort))}
	case len(r.Command) > 0:
		probe.Exec = &corev1.ExecAction{Command: r.Command}
	default:
		return nil, errors.New("readiness has neither a port nor a command")
	}
	return probe, nil
}

// readiness is the inverse of probe, for a Runtime reading a Pod.
func readiness(p *corev1.Probe) *Readiness {
	if p == nil {
		return nil
	}
	r := &Readiness{Timeout: time.Duration(p.FailureThreshold*max(1, p.PeriodSeconds)) * time.Second}
	if p.TCPSocket != nil {
		r.TCPPort = p.TCPSocket.Port.IntValue()
	}
	if p.Exec != nil {
		r.Command = p.Exec.Command
	}
	return r
}

// YAML is pod as the YAML `podman kube play` and `kubectl apply` read.
func YAML(pod *corev1.Pod) ([]byte, error) {
	b, err := yaml.Marshal(pod)
	if err != nil {
		return nil, fmt.Errorf("writing pod %s as YAML: %w", pod.Name, err)
	}
	return b, nil
}

var labelBad = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// Label makes v a valid Kubernetes label value: characters other than
// letters, digits, '_', '.' and '-' become '_', it is cut to 63 characters
// and trimmed to start and end with a letter or digit.
func Label(v string) string {
	v = labelBad.ReplaceAllString(v, "_")
	if len(v) > 63 {
		v = v[:63]
	}
	return strings.Trim(v, "_.-")
}

// Name makes a Pod name from parts (such as "slipway", a build id, a test
// name and a platform) and a suffix that makes it unique (such as a few
// random hex digits): lower-cased, other characters as '-', at most 63
// characters with the suffix kept whole.
func Name(suffix string, parts ...string) string {
	s := strings.ToLower(strings.Join(parts, "-"))
	s = regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(s, "-")
	suffix = strings.ToLower(suffix)
	if n := 63 - len(suffix) - 1; len(s) > n {
		s = s[:max(0, n)]
	}
	return strings.Trim(strings.Trim(s, "-")+"-"+suffix, "-")
}
