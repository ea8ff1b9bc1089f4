// Command benchtool is the helper of bench/run.sh (stdlib only):
//
//	benchtool freeport                       print a free TCP port on 127.0.0.1
//	benchtool walk -url U -pages N -query Q  follow pageInfo.endCursor N-1 times; print the cursor
//	                                         of page N and the seconds the walk took
//	benchtool pgbench -db DIR -out DIR ...   write pgbench scripts running the gateway's own SQL
//
// The pgbench scripts are not copies: benchtool type-checks the gateway's db package (go/types
// evaluates its constant SQL strings) and takes the listing statement for CREATED_AT DESC from
// listQueries and the statement of (*DB).Device, so they follow the gateway's SQL as it changes.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"go/types"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtool freeport | walk [flags] | pgbench [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "freeport":
		err = freePort()
	case "walk":
		err = walk(os.Args[2:])
	case "pgbench":
		err = writePgbench(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
}

func freePort() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	return nil
}

// walk requests page 1 of a listing, then each next page with after = the previous
// pageInfo.endCursor, until it has the cursor that fetches page -pages.
func walk(args []string) error {
	fs := flag.NewFlagSet("walk", flag.ContinueOnError)
	url := fs.String("url", "", "GraphQL endpoint")
	pages := fs.Int("pages", 1000, "the page whose after cursor to find")
	query := fs.String("query", "", "GraphQL query with an $after: String variable, selecting devices.pageInfo.endCursor")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client := &http.Client{Timeout: 30 * time.Second}
	var after *string
	start := time.Now()
	for page := 1; page < *pages; page++ {
		body, _ := json.Marshal(map[string]any{"query": *query, "variables": map[string]any{"after": after}})
		resp, err := client.Post(*url, "application/json", bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("page %d: %w", page, err)
		}
		var out struct {
			Data struct {
				Devices struct {
					PageInfo struct {
						HasNextPage bool    `json:"hasNextPage"`
						EndCursor   *string `json:"endCursor"`
					} `json:"pageInfo"`
				} `json:"devices"`
			} `json:"data"`
			Errors []json.RawMessage `json:"errors"`
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		_ = resp.Body.Close() // decoded already: a failed close loses nothing
		if err != nil {
			return fmt.Errorf("page %d: HTTP %d: %w", page, resp.StatusCode, err)
		}
		if len(out.Errors) > 0 {
			return fmt.Errorf("page %d: %s", page, out.Errors[0])
		}
		pi := out.Data.Devices.PageInfo
		if !pi.HasNextPage || pi.EndCursor == nil {
			return fmt.Errorf("the listing ends at page %d", page)
		}
		after = pi.EndCursor
	}
	fmt.Printf("%s %.3f\n", *after, time.Since(start).Seconds())
	return nil
}

// gatewaySQL returns the listing statement for {CREATED_AT, DESC} and the device-by-ID statement
// of the db package in dir.
func gatewaySQL(dir string) (list, byID string, err error) {
	fset := token.NewFileSet()
	matches, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return "", "", err
	}
	var files []*ast.File
	for _, path := range matches {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return "", "", err
		}
		files = append(files, f)
	}
	info := &types.Info{Types: map[ast.Expr]types.TypeAndValue{}}
	conf := types.Config{
		// Imports are not needed to fold the SQL constants; ignore what fails without them.
		Importer: emptyImporter{},
		Error:    func(error) {},
	}
	_, _ = conf.Check("db", fset, files, info)
	str := func(e ast.Expr) (string, bool) {
		tv, ok := info.Types[e]
		if !ok || tv.Value == nil || tv.Value.Kind() != constant.String {
			return "", false
		}
		return constant.StringVal(tv.Value), true
	}
	src := func(n ast.Node) string {
		p := fset.Position(n.Pos())
		e := fset.Position(n.End())
		b, _ := os.ReadFile(p.Filename)
		return string(b[p.Offset:e.Offset])
	}
	for _, f := range files {
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					vs, ok := spec.(*ast.ValueSpec)
					if !ok || len(vs.Names) != 1 || vs.Names[0].Name != "listQueries" || len(vs.Values) != 1 {
						continue
					}
					lit, ok := vs.Values[0].(*ast.CompositeLit)
					if !ok {
						continue
					}
					for _, el := range lit.Elts {
						kv, ok := el.(*ast.KeyValueExpr)
						if !ok {
							continue
						}
						key := strings.Join(strings.Fields(src(kv.Key)), "")
						if key == "{OrderCreatedAt,Desc}" || key == "{Field:OrderCreatedAt,Direction:Desc}" {
							list, _ = str(kv.Value)
						}
					}
				}
			case *ast.FuncDecl:
				if d.Name.Name != "Device" || d.Recv == nil || d.Body == nil {
					continue
				}
				ast.Inspect(d.Body, func(n ast.Node) bool {
					e, ok := n.(ast.Expr)
					if !ok {
						return true
					}
					if s, ok := str(e); ok && strings.Contains(s, "FROM devices") && len(s) > len(byID) {
						byID = s
					}
					return true
				})
			}
		}
	}
	if list == "" {
		return "", "", errors.New("listQueries[{OrderCreatedAt, Desc}] not found (or not a constant) in " + dir)
	}
	if byID == "" {
		return "", "", errors.New("the SQL of (*DB).Device not found in " + dir)
	}
	return list, byID, nil
}

type emptyImporter struct{}

func (emptyImporter) Import(path string) (*types.Package, error) {
	name := path[strings.LastIndex(path, "/")+1:]
	p := types.NewPackage(path, name)
	p.MarkComplete()
	return p, nil
}

var paramRE = regexp.MustCompile(`\$([0-9]+)`)

// pgbenchSQL replaces the $n parameters of sql: with a pgbench variable (":name", sent as a
// parameter with -M extended) or a literal (NULL). Every parameter must be mapped.
func pgbenchSQL(sql string, params map[int]string) (string, error) {
	var missing []int
	out := paramRE.ReplaceAllStringFunc(sql, func(m string) string {
		n, _ := strconv.Atoi(m[1:])
		v, ok := params[n]
		if !ok {
			missing = append(missing, n)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		sort.Ints(missing)
		return "", fmt.Errorf("the gateway's statement has parameters %v that bench/benchtool does not know; "+
			"update its parameter maps (db/devices.go says what they mean):\n%s", missing, sql)
	}
	// pgbench ends an SQL command at a semicolon; the gateway's statements have none.
	return strings.TrimSpace(out) + ";\n", nil
}

// writePgbench writes list_page1.sql, list_deep.sql, device.sql (pgbench scripts) and the
// matching *.args files (one pgbench option a line: -Dname=value).
func writePgbench(args []string) error {
	fs := flag.NewFlagSet("pgbench", flag.ContinueOnError)
	dbDir := fs.String("db", "db", "the gateway's db package directory")
	outDir := fs.String("out", "", "output directory")
	status := fs.String("status", "UP", "filter.status of the listing")
	first := fs.Int("first", 50, "page size of the listing (the gateway asks for first+1 rows)")
	cursor := fs.String("cursor", "", "the after cursor of the deep page (from walk)")
	idsFile := fs.String("ids", "", "file with device IDs, one a line")
	nids := fs.Int("nids", 128, "how many of the IDs the device script rotates through")
	if err := fs.Parse(args); err != nil {
		return err
	}
	list, byID, err := gatewaySQL(*dbDir)
	if err != nil {
		return err
	}
	// The meaning of listQueries' parameters (db/devices.go): $1..$4 the filters status, gpuModel,
	// region, verification; $5/$6 the keyset position (time, id); $7 the limit (first+1); $8 the
	// owner of an owner's own list; $9 the verification level's rank. NULL disables a condition, as the gateway sends it.
	page1 := map[int]string{1: ":status", 2: "NULL", 3: "NULL", 4: "NULL", 5: "NULL", 6: "NULL", 7: ":lim", 8: "NULL", 9: "NULL"}
	deep := map[int]string{1: ":status", 2: "NULL", 3: "NULL", 4: "NULL", 5: ":ktime", 6: ":kid", 7: ":lim", 8: "NULL", 9: "NULL"}
	ktime, kid, err := decodeCursor(*cursor)
	if err != nil {
		return err
	}
	listVars := fmt.Sprintf("-Dstatus=%s\n-Dlim=%d\n", *status, *first+1)
	type script struct{ name, sql, vars string }
	var scripts []script
	s, err := pgbenchSQL(list, page1)
	if err != nil {
		return err
	}
	scripts = append(scripts, script{"list_page1", s, listVars})
	s, err = pgbenchSQL(list, deep)
	if err != nil {
		return err
	}
	scripts = append(scripts, script{"list_deep", s, listVars + fmt.Sprintf("-Dktime=%s\n-Dkid=%s\n", ktime, kid)})

	raw, err := os.ReadFile(*idsFile)
	if err != nil {
		return err
	}
	ids := strings.Fields(string(raw))
	if len(ids) > *nids {
		ids = ids[:*nids]
	}
	if len(ids) == 0 {
		return errors.New("no device IDs in " + *idsFile)
	}
	// pgbench variables are numbers unless set with -D, so each ID is its own variable and the
	// script picks one at random; every branch runs the same statement.
	var b, vars strings.Builder
	fmt.Fprintf(&b, "\\set k random(1, %d)\n", len(ids))
	for i, id := range ids {
		s, err := pgbenchSQL(byID, map[int]string{1: fmt.Sprintf(":id%d", i+1)})
		if err != nil {
			return err
		}
		if i == 0 {
			fmt.Fprintf(&b, "\\if :k = %d\n", i+1)
		} else {
			fmt.Fprintf(&b, "\\elif :k = %d\n", i+1)
		}
		b.WriteString(s)
		fmt.Fprintf(&vars, "-Did%d=%s\n", i+1, id)
	}
	b.WriteString("\\endif\n")
	scripts = append(scripts, script{"device", b.String(), vars.String()})

	for _, sc := range scripts {
		if err := os.WriteFile(filepath.Join(*outDir, sc.name+".sql"), []byte(sc.sql), 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(*outDir, sc.name+".args"), []byte(sc.vars), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// decodeCursor reads the keyset position of a listing cursor: base64url (no padding) of
// {"v":1,"o":"CREATED_AT_DESC","k":"<RFC 3339 time>","i":"<uuid>"}.
func decodeCursor(c string) (key, id string, err error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", "", fmt.Errorf("cursor %q: %w", c, err)
	}
	var v struct {
		V     int    `json:"v"`
		Order string `json:"o"`
		Key   string `json:"k"`
		ID    string `json:"i"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", "", fmt.Errorf("cursor %q: %w", c, err)
	}
	if v.Order != "CREATED_AT_DESC" || v.Key == "" || v.ID == "" {
		return "", "", fmt.Errorf("cursor %s is not a CREATED_AT_DESC position", raw)
	}
	if _, err := time.Parse(time.RFC3339Nano, v.Key); err != nil {
		return "", "", fmt.Errorf("cursor key: %w", err)
	}
	return v.Key, v.ID, nil
}
