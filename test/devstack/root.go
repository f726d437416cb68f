package devstack

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// ModulePath names the module whose root RepoRoot looks for.
const ModulePath = "github.com/slipway-ci/slipway"

// RepoRoot returns the root folder of the slipway module: the first folder
// upwards from the working directory (then from this source file) whose
// go.mod declares the module.
func RepoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			if isModuleRoot(dir) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("finding the root of module %s: no go.mod above %s", ModulePath, strings.Join(starts, " or "))
}

func isModuleRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) == 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`) == ModulePath
		}
	}
	return false
}

// BinDir is where `make deps` puts buildkitd, buildctl and the rest:
// $SLIPWAY_BIN_DIR, else bin/ in the repository.
func BinDir() (string, error) {
	if d := os.Getenv("SLIPWAY_BIN_DIR"); d != "" {
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin"), nil
}
