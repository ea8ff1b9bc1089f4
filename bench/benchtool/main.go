// Command benchtool is the helper of bench/run.sh:
//
//	benchtool freeport                       print a free TCP port on 127.0.0.1
//	benchtool walk -url U -pages N -query Q  follow pageInfo.endCursor N-1 times; print the cursor
//	                                         of page N and the seconds the walk took
//	benchtool pgbench -db DIR -out DIR ...   write pgbench scripts running the gateway's own SQL
//
// The pgbench scripts are not copies: benchtool takes the statements an anonymous listing and
// device(id) run from db.ExplorerStatements, so they follow the gateway's SQL as it changes.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gpugate/gpugate/db"
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
	_ = fs.String("db", "", "ignored (the statements come from db.ExplorerStatements)")
	outDir := fs.String("out", "", "output directory")
	status := fs.String("status", "UP", "filter.status of the listing")
	first := fs.Int("first", 50, "page size of the listing (the gateway asks for first+1 rows)")
	cursor := fs.String("cursor", "", "the after cursor of the deep page (from walk)")
	idsFile := fs.String("ids", "", "file with device IDs, one a line")
	nids := fs.Int("nids", 128, "how many of the IDs the device script rotates through")
	if err := fs.Parse(args); err != nil {
		return err
	}
	list, listAfter, byID := db.ExplorerStatements()
	// Their parameters (db.ExplorerStatements): the status, the keyset position (time, id) of
	// the deep page, the limit (first+1).
	page1 := map[int]string{1: ":status", 2: ":lim"}
	deep := map[int]string{1: ":status", 2: ":ktime", 3: ":kid", 4: ":lim"}
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
	s, err = pgbenchSQL(listAfter, deep)
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
