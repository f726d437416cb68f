package worker

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const servicesYAML = `
tests:
  - name: integration
    services: [mqtt, vdb, app]
    target: test
    run: pytest
    env: {MQTT_PORT: "1883", VDB_PORT: "55555"}
  - name: smoke
    run: /app --version
services:
  - name: mqtt
    image: registry.example/eclipse-mosquitto:2
    command: mosquitto -c /mosquitto-no-auth.conf
    ports: [1883]
    readiness: {port: 1883, timeout: 20s}
  - name: vdb
    image: registry.example/kuksa-databroker@sha256:0123456789012345678901234567890123456789012345678901234567890123
    args: [--insecure, --port, "55555"]
    env: {RUST_LOG: info}
    ports: [55555]
    readiness: {run: [databroker-cli, --version]}
  - name: app
    image: app
`

func TestParseRepoConfigServices(t *testing.T) {
	t.Parallel()
	c, err := ParseRepoConfig([]byte(servicesYAML))
	require.NoError(t, err)
	require.Len(t, c.Services, 3)
	it := c.Tests[0]
	require.True(t, it.InPod())
	require.False(t, c.Tests[1].InPod())
	require.Equal(t, "test", it.Target)
	require.Equal(t, []string{"test"}, c.TestTargets())
	mqtt := c.Service("mqtt")
	require.Equal(t, []string{"/bin/sh", "-c", "mosquitto -c /mosquitto-no-auth.conf"}, mqtt.Command.Args)
	require.Equal(t, 1883, mqtt.Readiness.Port)
	require.Equal(t, 20*time.Second, mqtt.Readiness.Timeout)
	vdb := c.Service("vdb")
	require.Equal(t, DefaultReadinessTimeout, vdb.Readiness.Timeout, "default")
	require.Equal(t, []string{"databroker-cli", "--version"}, vdb.Readiness.Run.Args)
	require.Equal(t, AppImage, c.Service("app").Image)
	require.Nil(t, c.Service("app").Readiness)

	for _, tc := range []struct{ name, from, to, wantErr string }{
		{"unknown service", "services: [mqtt, vdb, app]", "services: [mqtt, db]",
			`.slipway.yml: line 3: tests[0] (integration): services: "db" is not one of the services of .slipway.yml`},
		{"listed twice", "services: [mqtt, vdb, app]", "services: [mqtt, mqtt]", `services: "mqtt" is listed twice`},
		{"image and target", "target: test", "target: test\n    image: app", "tests[0] (integration): give image or target, not both"},
		{"bad target", "target: test", "target: -x", `target: "-x" is not a stage name`},
		{"bad test image", "target: test", "image: 'UPPER:x:y'", "tests[0] (integration): image:"},
		{"service without name", "  - name: app\n    image: app", "  - image: app", ".slipway.yml: line 22: services[2]: name is required"},
		{"service named runner", "  - name: app\n", "  - name: runner\n", `services[2] (runner): name "runner" is the test runner's`},
		{"bad service name", "  - name: app\n", "  - name: My_App\n", `name "My_App" is not lower-case letters`},
		{"service twice", "  - name: app\n", "  - name: vdb\n", `services[2] (vdb): name "vdb" is used twice`},
		{"service without image", "    image: app\n", "", "line 22: services[2] (app): image: is required"},
		{"bad port", "ports: [1883]", "ports: [70000]", "services[0] (mqtt): ports: 70000 is not a TCP port"},
		{"same port", "ports: [55555]", "ports: [1883]", "services: mqtt and vdb both listen on port 1883"},
		{"port and run", "readiness: {port: 1883, timeout: 20s}", "readiness: {port: 1883, run: true}", "readiness: give a port or run, not both"},
		{"neither", "readiness: {port: 1883, timeout: 20s}", "readiness: {timeout: 20s}", "readiness: give a port"},
		{"long timeout", "timeout: 20s}", "timeout: 11m}", "readiness: timeout 11m0s is not between 1s and 10m0s"},
		{"unknown field", "ports: [1883]", "ports: [1883]\n    port: 1", `line 15: services[0]: unknown field "port" (did you mean "ports"?`},
		{"unknown readiness field", "timeout: 20s}", "timeout: 20s, tcp: 1}", `line 15: services[0].readiness: unknown field "tcp" (fields here: port, run, timeout)`},
		{"unknown test field", "target: test", "target: test\n    service: [mqtt]", `line 6: tests[0]: unknown field "service" (did you mean "services"?`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := strings.Replace(servicesYAML, tc.from, tc.to, 1)
			require.NotEqual(t, servicesYAML, y, "the case changes the file")
			_, err := ParseRepoConfig([]byte(y))
			require.ErrorContains(t, err, tc.wantErr)
		})
	}

	var many strings.Builder
	many.WriteString("services:\n")
	for i := range MaxServices + 1 {
		fmt.Fprintf(&many, "  - {name: s%d, image: app}\n", i)
	}
	_, err = ParseRepoConfig([]byte(many.String()))
	require.ErrorContains(t, err, ".slipway.yml: services: 11 services, more than the 10 a build may have")
}
