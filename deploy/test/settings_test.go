package deploytest

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// root is the slipway repository, two folders up.
var root = filepath.Join("..", "..")

// setting is one line of deploy/settings.txt.
type setting struct {
	name   string
	secret bool
	roles  []string // commands that read it: server, worker, dev, migrate, all, or client commands
}

// deployed says whether a process the chart or the compose file runs (server,
// worker, migrate) reads the setting; client commands' settings are not theirs.
func (s setting) deployed() bool {
	for _, r := range s.roles {
		switch r {
		case "all", "server", "worker", "migrate":
			return true
		}
	}
	return false
}

// readSettings reads deploy/settings.txt (see cmd/slipway/settings_file_test.go).
func readSettings(t *testing.T) map[string]setting {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "deploy", "settings.txt"))
	if err != nil {
		t.Fatalf("reading the settings list: %v", err)
	}
	defer f.Close()
	out := map[string]setting{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("deploy/settings.txt: %q is not NAME KIND ROLES", line)
		}
		out[f[0]] = setting{name: f[0], secret: f[1] == "secret", roles: strings.Split(f[2], ",")}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("deploy/settings.txt lists no settings")
	}
	return out
}

// diffNames returns the names only in a and only in b, sorted.
func diffNames[V any, W any](a map[string]V, b map[string]W) (onlyA, onlyB []string) {
	for k := range a {
		if _, ok := b[k]; !ok {
			onlyA = append(onlyA, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			onlyB = append(onlyB, k)
		}
	}
	slices.Sort(onlyA)
	slices.Sort(onlyB)
	return onlyA, onlyB
}
