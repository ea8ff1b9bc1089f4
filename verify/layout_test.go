package verify

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The dependencies point one way: resolvers → verify → db, attest, guard. The store, the rules
// and the guard never import the service or the GraphQL layer above it, so the verdict has one
// home and the rules stay usable by the worker.
func TestLowerLayersDoNotImportUpward(t *testing.T) {
	const mod = "github.com/gpugate/gpugate/"
	upward := []string{mod + "verify", mod + "resolvers", mod + "gateway", mod + "graph"}
	for _, dir := range []string{"../db", "../attest", "../guard", "../deviceauth"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no Go files (%v)", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") { // a package's tests may drive it from above
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				for _, up := range upward {
					if path == up || strings.HasPrefix(path, up+"/") {
						t.Errorf("%s imports %s", f, path)
					}
				}
			}
		}
	}
}
