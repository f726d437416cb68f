package pod_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slipway-ci/slipway/pod"
)

func TestSpecPod(t *testing.T) {
	t.Parallel()
	s := pod.Spec{
		Name:     pod.Name("ab12", "slipway", "42", "Unit Tests", "linux/arm64"),
		Labels:   map[string]string{pod.LabelBuild: "42", pod.LabelTest: "unit tests/ä", pod.LabelPlatform: "linux/arm64"},
		Platform: "linux/arm64",
		Services: []pod.Container{{Name: "mqtt", Image: "r/mosquitto@sha256:1", Ports: []int{1883},
			Ready: &pod.Readiness{TCPPort: 1883, Timeout: 1500 * time.Millisecond}}},
		Runner: pod.Container{Name: "runner", Image: "r/app-test@sha256:2", Args: []string{"pytest"},
			Env: map[string]string{"VDB_PORT": "55555", "MQTT_PORT": "1883"}},
		Limits: pod.Limits{CPU: "500m", Memory: "1Gi"},
	}
	p, err := s.Pod()
	require.NoError(t, err)
	doc, err := pod.YAML(p)
	require.NoError(t, err)
	y := string(doc)
	require.Equal(t, "slipway-42-unit-tests-linux-arm64-ab12", p.Name)
	for _, want := range []string{
		"kind: Pod", "restartPolicy: Never", "slipway.dev/runner: runner",
		"kubernetes.io/arch: arm64", "slipway.dev/test: unit_tests\n", "slipway.dev/platform: linux_arm64",
		"slipway.dev/managed: \"true\"", "cpu: 500m", "memory: 1Gi",
		"startupProbe:", "port: 1883", "failureThreshold: 2",
		"- name: MQTT_PORT\n      value: \"1883\"\n    - name: VDB_PORT",
	} {
		require.Contains(t, y, want)
	}

	for name, bad := range map[string]func(*pod.Spec){
		"pod name":   func(s *pod.Spec) { s.Name = "Not_A_Label" },
		"used twice": func(s *pod.Spec) { s.Services[0].Name = "runner" },
		"limit":      func(s *pod.Spec) { s.Limits.Memory = "lots" },
		"both":       func(s *pod.Spec) { s.Services[0].Ready.Command = []string{"true"} },
		"neither":    func(s *pod.Spec) { s.Services[0].Ready = &pod.Readiness{} },
		"image":      func(s *pod.Spec) { s.Runner.Image = "" },
	} {
		c := s
		c.Services = []pod.Container{s.Services[0]}
		r := *s.Services[0].Ready
		c.Services[0].Ready = &r
		bad(&c)
		_, err := c.Pod()
		require.Error(t, err, name)
	}
	require.Len(t, pod.Name("0123abcd", "x012345678901234567890123456789012345678901234567890123456789"), 63)
}
