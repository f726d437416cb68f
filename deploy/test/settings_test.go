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
		name, kind, _ := strings.Cut(line, " ")
		out[name] = setting{name: name, secret: kind == "secret"}
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
