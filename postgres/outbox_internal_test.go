package postgres

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestStateChangesWriteTheOutbox: every SQL statement of this package that
// sets a build's state (UPDATE builds … SET … state = …, up to its WHERE) is
// built with statusOutbox, so no code path can change a build's state
// without queueing its commit status. The new build's first status is
// queued by sqlEnqueue, which every enqueue runs.
func TestStateChangesWriteTheOutbox(t *testing.T) {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	setsState := regexp.MustCompile(`(?is)\bUPDATE\s+builds\b(\s+b)?\s+SET\b`)
	stateAssign := regexp.MustCompile(`(?i)(^|[\s,(])state\s*=`)
	var checked []string
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		require.NoError(t, err)
		ast.Inspect(f, func(n ast.Node) bool {
			spec, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, v := range spec.Values {
				var sql strings.Builder
				withOutbox := false
				ast.Inspect(v, func(n ast.Node) bool {
					switch x := n.(type) {
					case *ast.BasicLit:
						if x.Kind == token.STRING {
							s, _ := strconv.Unquote(x.Value)
							sql.WriteString(s)
						}
					case *ast.CallExpr:
						if id, ok := x.Fun.(*ast.Ident); ok && id.Name == "statusOutbox" {
							withOutbox = true
						}
					}
					return true
				})
				text := sql.String()
				for _, loc := range setsState.FindAllStringIndex(text, -1) {
					set := text[loc[1]:]
					if end := strings.Index(strings.ToUpper(set), "WHERE"); end >= 0 {
						set = set[:end]
					}
					if stateAssign.MatchString(set) {
						name := spec.Names[i].Name
						checked = append(checked, name)
						require.True(t, withOutbox, "%s (%s) sets a build's state without statusOutbox", name, file)
					}
				}
			}
			return true
		})
	}
	// The statements known today: the check must find them, or it checks nothing.
	for _, want := range []string{"sqlCancelBuild", "sqlJobClaim", "sqlBuildUpdate", "sqlJobRescueStuck", "sqlEnqueue"} {
		require.Contains(t, checked, want)
	}
	require.Contains(t, sqlEnqueue, "INSERT INTO forge_statuses")
}
