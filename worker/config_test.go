package worker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/stretchr/testify/require"
)

func TestParseRepoConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		yaml    string
		wantErr string
		check   func(t *testing.T, c *RepoConfig)
	}{
		{name: "Empty", yaml: "", check: func(t *testing.T, c *RepoConfig) {
			require.Equal(t, []string{"linux/amd64", "linux/arm64"}, c.Platforms)
			require.Equal(t, "Dockerfile", c.Dockerfile)
			require.Equal(t, ".", c.Context)
			require.Empty(t, c.Tests)
		}},
		{name: "Full", yaml: `
platforms: [linux/arm64, linux/arm/v7]
dockerfile: build/Dockerfile
context: app
tests:
  - name: shell
    run: echo hi && uname -m
    env: {GREETING: hello}
    timeout: 30s
  - name: exec
    run: ["/bin/app", "--version"]
`, check: func(t *testing.T, c *RepoConfig) {
			require.Equal(t, []string{"linux/arm64", "linux/arm/v7"}, c.Platforms)
			require.Equal(t, "build/Dockerfile", c.Dockerfile)
			require.Len(t, c.Tests, 2)
			require.Equal(t, []string{"/bin/sh", "-c", "echo hi && uname -m"}, c.Tests[0].Run.Args)
			require.Equal(t, "hello", c.Tests[0].Env["GREETING"])
			require.Equal(t, 30*time.Second, c.Tests[0].Timeout)
			require.Equal(t, []string{"/bin/app", "--version"}, c.Tests[1].Run.Args)
			require.Equal(t, 10*time.Minute, c.Tests[1].Timeout, "default timeout")
		}},
		{name: "UnknownField", yaml: "platform: [linux/amd64]\n", wantErr: `line 1: unknown field "platform" (did you mean "platforms"?`},
		{name: "BadPlatform", yaml: "platforms: [amd64]\n", wantErr: `platforms: "amd64" is not os/arch`},
		{name: "DuplicatePlatform", yaml: "platforms: [linux/amd64, linux/amd64]\n", wantErr: "listed twice"},
		{name: "TestWithoutName", yaml: "tests:\n  - run: 'true'\n", wantErr: "line 2: tests[0]: name is required"},
		{name: "TestWithoutRun", yaml: "tests:\n  - name: x\n", wantErr: "tests[0] (x): run is required"},
		{name: "EmptyRun", yaml: "tests:\n  - name: x\n    run: ''\n", wantErr: "line 3: run is empty"},
		{name: "RunMapping", yaml: "tests:\n  - name: x\n    run: {a: b}\n", wantErr: "run must be a string or a list"},
		{name: "DuplicateTest", yaml: "tests:\n  - {name: x, run: 'true'}\n  - {name: x, run: 'true'}\n", wantErr: `name "x" is used twice`},
		{name: "DockerfileOutside", yaml: "dockerfile: ../Dockerfile\n", wantErr: "dockerfile: \"../Dockerfile\" must be a path inside the repository"},
		{name: "BadTimeout", yaml: "tests:\n  - {name: x, run: 'true', timeout: soon}\n", wantErr: ".slipway.yml"},
		{name: "NotYAML", yaml: "platforms: [", wantErr: ".slipway.yml: line 1"},
		{name: "TestPlatformsAndIntegration", yaml: `
tests:
  - {name: arm-only, run: 'true', platforms: [linux/arm64]}
  - {name: all, run: 'true'}
integration: {webhook: "https://ci.example.com/hook", timeout: 90s}
`, check: func(t *testing.T, c *RepoConfig) {
			require.Equal(t, []string{"linux/arm64"}, c.Tests[0].Platforms)
			require.True(t, c.Tests[0].RunsOn("linux/arm64"))
			require.False(t, c.Tests[0].RunsOn("linux/amd64"))
			require.True(t, c.Tests[1].RunsOn("linux/amd64"), "no platforms: every built one")
			require.Equal(t, "https://ci.example.com/hook", c.Integration.Webhook)
			require.Equal(t, 90*time.Second, c.Integration.Timeout)
		}},
		{name: "IntegrationDefaultTimeout", yaml: "integration: {webhook: 'http://h/x'}\n", check: func(t *testing.T, c *RepoConfig) {
			require.Equal(t, DefaultIntegrationTimeout, c.Integration.Timeout)
		}},
		{name: "TestPlatformNotBuilt", yaml: "platforms: [linux/amd64]\ntests:\n  - {name: x, run: 'true', platforms: [linux/arm64]}\n", wantErr: `tests[0] (x): platforms: "linux/arm64" is not built`},
		{name: "IntegrationWithoutWebhook", yaml: "integration: {timeout: 5m}\n", wantErr: "integration: webhook is required"},
		{name: "IntegrationBadWebhook", yaml: "integration: {webhook: 'ftp://x/y'}\n", wantErr: `integration: webhook "ftp://x/y" is not an http(s) URL`},
		{name: "IntegrationUnknownField", yaml: "integration: {url: 'http://x/y'}\n", wantErr: `line 1: integration: unknown field "url" (fields here: timeout, webhook)`},
		{name: "BadCache", yaml: "platforms: [linux/amd64]\ncache: all\n", wantErr: `line 2: cache: "all" is not max, min or off`},
		{name: "BadProvenance", yaml: "provenance: full\n", wantErr: `line 1: provenance: "full" is not min, max or off`},
		{name: "BadSecretName", yaml: "\nsecrets: [NPM-TOKEN]\n", wantErr: `line 2: secrets: "NPM-TOKEN" is not a secret name`},
		{name: "BadBuildArg", yaml: "build_args: {\"A B\": x}\n", wantErr: `line 1: build_args: "A B" is not a build argument name`},
		{name: "UnknownPlaceholder", yaml: "tags: ['{{commit}}']\n", wantErr: "line 1: tags: \"{{commit}}\" uses unknown placeholder {{commit}}"},
		{name: "BadTagTemplate", yaml: "tags: ['v/{{tag}}']\n", wantErr: "line 1: tags: \"v/{{tag}}\" does not make a valid tag"},
		{name: "BadBranchGlob", yaml: "branches: ['[']\n", wantErr: "line 1: branches:"},
		{name: "NegativeTimeout", yaml: "timeout: -5m\n", wantErr: "line 1: timeout: must be positive"},
		{name: "BadTimeoutValue", yaml: "timeout: soon\n", wantErr: "line 1"},
		{name: "Everything", yaml: `
target: runtime
build_args: {VERSION: "1.2", GOFLAGS: -trimpath}
secrets: [NPM_TOKEN]
tags: ["{{branch}}", "{{semver.major}}.{{semver.minor}}", "sha-{{short_sha}}"]
cache: min
provenance: max
branches: [main, release/*]
timeout: 20m
`, check: func(t *testing.T, c *RepoConfig) {
			require.Equal(t, "runtime", c.Target)
			require.Equal(t, map[string]string{"VERSION": "1.2", "GOFLAGS": "-trimpath"}, c.BuildArgs)
			require.Equal(t, []string{"NPM_TOKEN"}, c.Secrets)
			require.Equal(t, CacheMin, c.Cache)
			require.Equal(t, ProvenanceMax, c.Provenance)
			require.Equal(t, 20*time.Minute, c.Timeout)
			require.True(t, c.BranchAllowed("refs/heads/release/1.x"))
			require.False(t, c.BranchAllowed("refs/heads/feature"))
			require.True(t, c.BranchAllowed("refs/tags/v1"), "tags are always built")
		}},
		{name: "Defaults", yaml: "", check: func(t *testing.T, c *RepoConfig) {
			require.Equal(t, CacheMax, c.Cache)
			require.Equal(t, ProvenanceMin, c.Provenance)
			require.Equal(t, DefaultBuildTimeout, c.Timeout)
			require.Equal(t, DefaultTags, c.Tags)
			require.True(t, c.BranchAllowed("refs/heads/anything"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := ParseRepoConfig([]byte(tt.yaml))
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Contains(t, err.Error(), RepoConfigFile, "errors name the file")
				return
			}
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}

func TestRedactURLs(t *testing.T) {
	t.Parallel()
	require.Equal(t, "fatal: could not read from https://***@github.com/acme/app.git and ssh://***@host/x",
		redactURLs("fatal: could not read from https://x-access-token:ghs_secret@github.com/acme/app.git and ssh://git@host/x"))
	require.Equal(t, "git://127.0.0.1:9418/demo.git", redactURLs("git://127.0.0.1:9418/demo.git"))
}

func TestRenderTags(t *testing.T) {
	t.Parallel()
	sha := "0123456789abcdef0123456789abcdef01234567"
	tpl := []string{"{{branch}}", "{{tag}}", "{{semver.major}}", "{{semver.major}}.{{semver.minor}}", "{{semver.version}}", "sha-{{short_sha}}", "latest"}
	require.Equal(t, []string{"feature-x", "sha-0123456", "latest"},
		RenderTags(tpl, TagValues("refs/heads/feature/x", sha)))
	require.Equal(t, []string{"v1.2.3", "1", "1.2", "1.2.3", "sha-0123456", "latest"},
		RenderTags(tpl, TagValues("refs/tags/v1.2.3", sha)))
	require.Equal(t, []string{"v2.0.0-rc.1", "2.0.0-rc.1", "sha-0123456", "latest"},
		RenderTags(tpl, TagValues("refs/tags/v2.0.0-rc.1", sha)), "a pre-release moves no major or minor tag")
	require.Equal(t, []string{"main"}, RenderTags(DefaultTags, TagValues("refs/heads/main", sha)))
}

func TestCleanWorkspaces(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dead := filepath.Join(dir, "build-7-pid999999999-abc")
	live := filepath.Join(dir, fmt.Sprintf("build-8-pid%d-def", os.Getppid()))
	other := filepath.Join(dir, "keep-me")
	for _, d := range []string{dead, live, other} {
		require.NoError(t, os.MkdirAll(filepath.Join(d, "src"), 0o700))
	}
	cleanWorkspaces(dir, zerolog.Nop())
	require.NoDirExists(t, dead, "left by a process that is gone")
	require.DirExists(t, live, "a running process's build")
	require.DirExists(t, other)
}

func TestParseRepoConfigCaps(t *testing.T) {
	t.Parallel()
	list := func(n int, f func(i int) string) string {
		items := make([]string, n)
		for i := range items {
			items[i] = f(i)
		}
		return "[" + strings.Join(items, ", ") + "]"
	}
	tests := make([]string, MaxTests+1)
	for i := range tests {
		tests[i] = fmt.Sprintf("  - {name: t%d, run: 'true'}", i)
	}
	env := make([]string, MaxTestEnv+1)
	for i := range env {
		env[i] = fmt.Sprintf("V%d: x", i)
	}
	args := make([]string, MaxTestArgs+1)
	for i := range args {
		args[i] = "a"
	}
	buildArgs := make([]string, MaxBuildArgs+1)
	for i := range buildArgs {
		buildArgs[i] = fmt.Sprintf("A%d: x", i)
	}
	for _, tt := range []struct{ name, yaml, wantErr string }{
		{"Tests", "\ntests:\n" + strings.Join(tests, "\n") + "\n",
			".slipway.yml: line 2: tests: 101 tests, more than the 100 a build may have; list fewer"},
		{"Tags", "tags: " + list(MaxTags+1, func(i int) string { return fmt.Sprint("t", i) }) + "\n",
			".slipway.yml: line 1: tags: 33 tag templates, more than the 32 a build may have; list fewer"},
		{"Platforms", "platforms: " + list(MaxPlatforms+1, func(i int) string { return fmt.Sprint("linux/a", i) }) + "\n",
			".slipway.yml: line 1: platforms: 17 platforms, more than the 16 a build may have; list fewer"},
		{"Secrets", "secrets: " + list(MaxSecrets+1, func(i int) string { return fmt.Sprint("S", i) }) + "\n",
			".slipway.yml: line 1: secrets: 51 secrets, more than the 50 a build may have; list fewer"},
		{"Branches", "branches: " + list(MaxBranches+1, func(i int) string { return fmt.Sprint("b", i) }) + "\n",
			".slipway.yml: line 1: branches: 101 branch patterns, more than the 100 a build may have; list fewer"},
		{"BuildArgs", "build_args: {" + strings.Join(buildArgs, ", ") + "}\n",
			".slipway.yml: line 1: build_args: 101 build arguments, more than the 100 a build may have; list fewer"},
		{"BuildArgValue", "build_args: {BIG: " + strings.Repeat("x", MaxBuildArgBytes+1) + "}\n",
			".slipway.yml: line 1: build_args: the value of BIG is 8193 bytes, over the 8 KiB a build argument may hold; put large data in a file of the repository"},
		{"TestEnv", "tests:\n  - name: x\n    run: 'true'\n    env: {" + strings.Join(env, ", ") + "}\n",
			".slipway.yml: line 2: tests[0]: env: 101 variables, more than the 100 a test may have; list fewer"},
		{"TestArgs", "tests:\n  - name: x\n    run: [" + strings.Join(args, ", ") + "]\n",
			".slipway.yml: line 2: tests[0]: run: 1001 arguments, more than the 1000 a test may have; use a script in the image"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseRepoConfig([]byte(tt.yaml))
			require.EqualError(t, err, tt.wantErr)
		})
	}

	t.Run("AtTheCapsIsFine", func(t *testing.T) {
		t.Parallel()
		c, err := ParseRepoConfig([]byte("tests:\n" + strings.Join(tests[:MaxTests], "\n") + "\n" +
			"tags: " + list(MaxTags, func(i int) string { return fmt.Sprint("t", i) }) + "\n"))
		require.NoError(t, err)
		require.Len(t, c.Tests, MaxTests)
		require.Len(t, c.Tags, MaxTags)
	})
}

// TestParseRepoConfigDecodeErrors checks that a file that does not fit the
// shape of .slipway.yml gets an error naming the file, the line and the field
// in .slipway.yml's words, never a Go type.
func TestParseRepoConfigDecodeErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, yaml, wantErr string }{
		{"UnknownTopLevel", "target: app\nplaforms: [linux/amd64]\n",
			`.slipway.yml: line 2: unknown field "plaforms" (did you mean "platforms"? fields here: branches, build_args, cache, chart, context, dockerfile, integration, platforms, provenance, release, secrets, services, submodules, tags, target, tests, timeout)`},
		{"UnknownTopLevelNoHint", "colour: blue\n",
			`.slipway.yml: line 1: unknown field "colour" (fields here: branches, build_args,`},
		{"UnknownInTest", "tests:\n  - name: x\n    run: 'true'\n    timout: 5s\n",
			`.slipway.yml: line 4: tests[0]: unknown field "timout" (did you mean "timeout"? fields here: env, image, junit, name, platforms, run, services, target, timeout)`},
		{"UnknownInSecondTest", "tests:\n  - {name: x, run: 'true'}\n  - {name: y, run: 'true', Env: {A: b}}\n",
			`.slipway.yml: line 3: tests[1]: unknown field "Env" (did you mean "env"?`},
		{"UnknownInService", "services:\n  - name: db\n    image: app\n    port: [5432]\n",
			`.slipway.yml: line 4: services[0]: unknown field "port" (did you mean "ports"? fields here: args, command, env, image, name, ports, readiness)`},
		{"UnknownInReadiness", "services:\n  - name: db\n    image: app\n    readiness: {tcp: 5432}\n",
			`.slipway.yml: line 4: services[0].readiness: unknown field "tcp" (fields here: port, run, timeout)`},
		{"UnknownInMerge", "tests:\n  - <<: {name: x, bad: 1}\n    run: 'true'\n",
			`.slipway.yml: line 2: tests[0]: unknown field "bad"`},
		{"ListIsString", "\n\ntests: oops\n", `.slipway.yml: line 3: tests must be a list of tests, not the string "oops"`},
		{"ListIsMap", "services: {db: postgres}\n", `.slipway.yml: line 1: services must be a list of services, not a map`},
		{"StringListIsString", "platforms: linux/amd64\n", `.slipway.yml: line 1: platforms must be a list of strings, not the string "linux/amd64"`},
		{"ListItemIsString", "tests: [oops]\n", `.slipway.yml: line 1: tests[0] must be a map of fields, not the string "oops"`},
		{"MapIsList", "build_args: [VERSION=1]\n", `.slipway.yml: line 1: build_args must be a map of names to strings, not a list`},
		{"NestedMapIsList", "tests:\n  - name: x\n    run: 'true'\n    env: [A=b]\n",
			`.slipway.yml: line 4: tests[0].env must be a map of names to strings, not a list`},
		{"ScalarIsList", "target: [a, b]\n", `.slipway.yml: line 1: target must be a string, not a list`},
		{"DurationIsWord", "timeout: soon\n", `.slipway.yml: line 1: timeout must be a duration such as 30m, not the string "soon"`},
		{"NestedDurationIsWord", "tests:\n  - {name: x, run: 'true', timeout: soon}\n",
			`.slipway.yml: line 2: tests[0].timeout must be a duration such as 30m, not the string "soon"`},
		{"BoolIsWord", "submodules: maybe\n", `.slipway.yml: line 1: submodules must be true or false, not the string "maybe"`},
		{"NestedBoolIsNumber", "release: {enabled: 3}\n", `.slipway.yml: line 1: release.enabled must be true or false, not the number 3`},
		{"PortIsWord", "services:\n  - name: db\n    image: app\n    ports: [pg]\n",
			`.slipway.yml: line 4: services[0].ports[0] must be a whole number, not the string "pg"`},
		{"StructIsString", "integration: https://ci.example.com/hook\n",
			`.slipway.yml: line 1: integration must be a map of fields, not the string "https://ci.example.com/hook"`},
		{"FileIsString", "hello\n", `.slipway.yml: line 1: the file must be a map of fields, not the string "hello"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseRepoConfig([]byte(tt.yaml))
			require.ErrorContains(t, err, tt.wantErr)
			require.NotContains(t, err.Error(), "worker.", "no Go type")
			require.NotContains(t, err.Error(), "unmarshal", "no decoder wording")
			require.NotContains(t, err.Error(), "!!", "no YAML tag")
		})
	}

	t.Run("AnchorsAndMergesStillWork", func(t *testing.T) {
		t.Parallel()
		c, err := ParseRepoConfig([]byte("tests:\n  - &base {name: a, run: 'true', timeout: 1m}\n  - <<: *base\n    name: b\n"))
		require.NoError(t, err)
		require.Equal(t, "b", c.Tests[1].Name)
		require.Equal(t, time.Minute, c.Tests[1].Timeout)
	})
}

func TestEditDistance(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"plaforms", "platforms", 1}, {"timout", "timeout", 1}, {"tset", "test", 2}, {"", "abc", 3}, {"kitten", "sitting", 3}} {
		require.Equal(t, tt.want, editDistance(tt.a, tt.b), "%s/%s", tt.a, tt.b)
	}
}

func TestDecodeErrorDropsGoTypes(t *testing.T) {
	t.Parallel()
	err := &yaml.TypeError{Errors: []string{"line 3: cannot unmarshal !!str `oops` into []worker.TestSpec", "line 4: other"}}
	require.Equal(t, "line 3: `oops` is not a valid value here", decodeError(err))
	require.Equal(t, "line 1: did not find expected node content", decodeError(errors.New("yaml: line 1: did not find expected node content")))
}
