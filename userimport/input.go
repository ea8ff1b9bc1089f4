package userimport

import (
	"context"
	"database/sql"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on input values, in characters. Longer values are input errors, never truncated.
const (
	maxLegacyID    = 255  // users.legacy_id
	maxSubject     = 255  // user_identities.subject CHECK
	maxIssuer      = 512  // user_identities.issuer CHECK
	maxEmail       = 320  // 64 + @ + 255
	maxDisplayName = 1024 // users.display_name
)

// maxInputProblems is how many malformed rows an InputError lists before reading stops.
const maxInputProblems = 10

// space is what is trimmed from both ends of identifiers and emails (the SQL side uses the
// same set, see wsSQL).
const space = " \t\r\n\v\f"

// Problem is one malformed input row.
type Problem struct {
	Source string // "legacy CSV", "identities CSV", "mapping CSV", "legacy table"
	Line   int    // 1-based line of the record in its file (0 for the legacy table)
	Msg    string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s line %d: %s", p.Source, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.Source, p.Msg)
}

// InputError reports malformed input: Run validates every input before it writes anything,
// so nothing was changed. Problems lists up to 10 rows per input: reading an input stops at its
// 10th problem (Stopped).
type InputError struct {
	Problems []Problem
	Stopped  bool
}

func (e *InputError) Error() string {
	if len(e.Problems) == 1 {
		return "userimport: malformed input: " + e.Problems[0].String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "userimport: malformed input (%d problems", len(e.Problems))
	if e.Stopped {
		b.WriteString("; reading stops at an input's 10th")
	}
	b.WriteString("):")
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// problems collects the problems of one input and turns them into an *InputError.
type problems struct {
	source string
	list   []Problem
}

func (p *problems) add(line int, format string, args ...any) {
	p.list = append(p.list, Problem{Source: p.source, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (p *problems) full() bool { return len(p.list) >= maxInputProblems }

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	return &InputError{Problems: p.list, Stopped: p.full()}
}

// csvInput reads a CSV file with a header row naming its columns (in any order, case-insensitive;
// unknown columns are ignored).
type csvInput struct {
	r    *csv.Reader
	cols []int // index in the record of each wanted column, -1 when absent
	prob *problems
	rows int
}

// openCSV reads the header. want lists the column names; optional ones may be absent.
func openCSV(src io.Reader, source string, want []string, optional map[string]bool) (*csvInput, error) {
	r := csv.NewReader(src)
	r.ReuseRecord = true
	r.TrimLeadingSpace = true
	in := &csvInput{r: r, prob: &problems{source: source}}
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		in.prob.add(0, "empty file: expected a header row %s", strings.Join(want, ","))
		return nil, in.prob.err()
	}
	if err != nil {
		return nil, in.csvError(err)
	}
	index := make(map[string]int, len(header))
	for i, h := range header {
		if i == 0 {
			h = strings.TrimPrefix(h, "\uFEFF") // a byte order mark (spreadsheet exports)
		}
		h = strings.ToLower(strings.Trim(h, space))
		if _, dup := index[h]; dup && h != "" {
			in.prob.add(1, "column %q appears twice in the header", h)
			return nil, in.prob.err()
		}
		index[h] = i
	}
	in.cols = make([]int, len(want))
	var missing []string
	for i, name := range want {
		j, ok := index[name]
		if !ok {
			j = -1
			if !optional[name] {
				missing = append(missing, name)
			}
		}
		in.cols[i] = j
	}
	if len(missing) > 0 {
		in.prob.add(1, "the header lacks column(s) %s (header must name %s; found %s)",
			strings.Join(missing, ","), strings.Join(want, ","), strings.Join(header, ","))
		return nil, in.prob.err()
	}
	return in, nil
}

func (in *csvInput) csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		in.prob.add(pe.StartLine, "%v", pe.Err)
	} else {
		in.prob.add(0, "read: %v", err)
	}
	return in.prob.err()
}

// next returns the wanted fields of the next valid record and its line, skipping (and recording)
// malformed ones; ok is false at the end of the input or when reading must stop (see err).
func (in *csvInput) next(fields []string) (line int, ok bool, err error) {
	for {
		if in.prob.full() {
			return 0, false, nil
		}
		rec, err := in.r.Read()
		if errors.Is(err, io.EOF) {
			return 0, false, nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) && errors.Is(pe.Err, csv.ErrFieldCount) {
				in.prob.add(pe.StartLine, "%d columns, the header has %d", len(rec), in.r.FieldsPerRecord)
				continue
			}
			if errors.As(err, &pe) {
				in.prob.add(pe.StartLine, "%v", pe.Err)
				return 0, false, nil // the CSV syntax is broken: what follows cannot be trusted
			}
			return 0, false, err // the reader itself failed
		}
		line, _ = in.r.FieldPos(0)
		good := true
		for i, c := range in.cols {
			v := ""
			if c >= 0 {
				v = rec[c]
			}
			if !utf8.ValidString(v) {
				in.prob.add(line, "column %d is not valid UTF-8", c+1)
				good = false
				break
			}
			if strings.IndexByte(v, 0) >= 0 {
				in.prob.add(line, "column %d contains a NUL byte", c+1)
				good = false
				break
			}
			fields[i] = strings.Trim(v, space)
		}
		if !good {
			continue
		}
		in.rows++
		return line, true, nil
	}
}

// checkLen records a problem when v is empty (and required) or longer than max characters.
func (in *csvInput) checkLen(line int, name, v string, required bool, limit int) bool {
	if required && v == "" {
		in.prob.add(line, "empty %s", name)
		return false
	}
	if n := utf8.RuneCountInString(v); n > limit {
		in.prob.add(line, "%s is %d characters long (at most %d)", name, n, limit)
		return false
	}
	return true
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// copyRows streams rows into a COPY ... FROM STDIN statement in one transaction on conn.
// produce calls emit for each row; it returns the input's problems, if any, which roll the
// transaction back.
func copyRows(ctx context.Context, conn *sql.Conn, copySQL string, produce func(emit func(args ...any) error) error) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	stmt, err := tx.PrepareContext(ctx, copySQL)
	if err != nil {
		return err
	}
	emit := func(args ...any) error {
		_, err := stmt.ExecContext(ctx, args...)
		return err
	}
	if err := produce(emit); err != nil {
		_ = stmt.Close()
		return err
	}
	if _, err := stmt.ExecContext(ctx); err != nil {
		_ = stmt.Close()
		return err
	}
	if err := stmt.Close(); err != nil {
		return err
	}
	return tx.Commit()
}

// stageCSV copies one CSV input into its staging table: row checks a line's fields, records
// problems on in, and returns the values to copy (ok false to skip the line). Once any problem is
// recorded no more rows are sent: the run is doomed and the transaction rolls back with the list.
func stageCSV(ctx context.Context, conn *sql.Conn, in *csvInput, copySQL string, columns int,
	row func(line int, f []string) (values []any, ok bool)) error {
	return copyRows(ctx, conn, copySQL, func(emit func(...any) error) error {
		f := make([]string, columns)
		for {
			line, ok, err := in.next(f)
			if err != nil {
				return err
			}
			if !ok {
				return in.prob.err()
			}
			values, ok := row(line, f)
			if !ok || len(in.prob.list) > 0 {
				continue
			}
			if err := emit(append([]any{int64(line)}, values...)...); err != nil {
				return err
			}
		}
	})
}

// stageLegacyCSV copies the legacy CSV (legacy_id,email[,display_name]) into the staging table.
func stageLegacyCSV(ctx context.Context, conn *sql.Conn, src io.Reader) error {
	in, err := openCSV(src, "legacy CSV", []string{"legacy_id", "email", "display_name"}, map[string]bool{"display_name": true})
	if err != nil {
		return err
	}
	return stageCSV(ctx, conn, in, copyLegacySQL, 3, func(line int, f []string) ([]any, bool) {
		ok := in.checkLen(line, "legacy_id", f[0], true, maxLegacyID) &&
			in.checkLen(line, "email", f[1], false, maxEmail) &&
			in.checkLen(line, "display_name", f[2], false, maxDisplayName)
		return []any{f[0], nullable(f[1]), f[2]}, ok
	})
}

// stageIdentitiesCSV copies the IdP export (subject,email,email_verified) into the staging table.
func stageIdentitiesCSV(ctx context.Context, conn *sql.Conn, src io.Reader) error {
	in, err := openCSV(src, "identities CSV", []string{"subject", "email", "email_verified"}, nil)
	if err != nil {
		return err
	}
	return stageCSV(ctx, conn, in, copyIdentitiesSQL, 3, func(line int, f []string) ([]any, bool) {
		if !in.checkLen(line, "subject", f[0], true, maxSubject) ||
			!in.checkLen(line, "email", f[1], false, maxEmail) {
			return nil, false
		}
		verified, ok := parseVerified(f[2])
		if !ok {
			in.prob.add(line, "email_verified is %q: expected true or false", f[2])
			return nil, false
		}
		return []any{f[0], nullable(f[1]), verified}, true
	})
}

// parseVerified accepts what IdP exports write for a boolean; empty means not verified.
func parseVerified(s string) (verified, ok bool) {
	switch strings.ToLower(s) {
	case "", "false", "f", "0", "no", "n":
		return false, true
	case "true", "t", "1", "yes", "y":
		return true, true
	}
	if b, err := strconv.ParseBool(s); err == nil {
		return b, true
	}
	return false, false
}

// stageMappingCSV copies the explicit mapping (legacy_id,subject) into the staging table.
func stageMappingCSV(ctx context.Context, conn *sql.Conn, src io.Reader) error {
	in, err := openCSV(src, "mapping CSV", []string{"legacy_id", "subject"}, nil)
	if err != nil {
		return err
	}
	return stageCSV(ctx, conn, in, copyMappingSQL, 2, func(line int, f []string) ([]any, bool) {
		ok := in.checkLen(line, "legacy_id", f[0], true, maxLegacyID) &&
			in.checkLen(line, "subject", f[1], true, maxSubject)
		return []any{f[0], f[1]}, ok
	})
}
