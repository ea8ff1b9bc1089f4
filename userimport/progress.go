package userimport

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// NewProgressBar returns an Options.Progress callback writing to w (typically os.Stderr). On a
// terminal it redraws one line, "[=====>    ]  45%  450000/1000000  12.3s", at most ten times a
// second, ending it with a newline when done reaches total; elsewhere (a file, a pipe, a CI log)
// it writes a plain line at most every five seconds, and at the end.
func NewProgressBar(w io.Writer) func(done, total int) {
	return newProgress(w, isTerminal(w), time.Now)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

const barWidth = 30

func newProgress(w io.Writer, tty bool, now func() time.Time) func(done, total int) {
	var (
		mu    sync.Mutex
		start = now()
		last  time.Time
		ended bool
	)
	every := 5 * time.Second
	if tty {
		every = 100 * time.Millisecond
	}
	return func(done, total int) {
		mu.Lock()
		defer mu.Unlock()
		t := now()
		final := done >= total
		if ended || (!final && !last.IsZero() && t.Sub(last) < every) {
			return
		}
		last = t
		ended = final
		pct := 100
		if total > 0 {
			pct = int(int64(done) * 100 / int64(total))
		}
		elapsed := t.Sub(start).Round(100 * time.Millisecond)
		if !tty {
			fmt.Fprintf(w, "users import: %d/%d legacy accounts (%d%%), %s\n", done, total, pct, elapsed)
			return
		}
		fill := barWidth * pct / 100
		bar := strings.Repeat("=", fill)
		if fill < barWidth {
			bar += ">" + strings.Repeat(" ", barWidth-fill-1)
		}
		end := ""
		if final {
			end = "\n"
		}
		fmt.Fprintf(w, "\r[%s] %3d%%  %d/%d  %s%s", bar, pct, done, total, elapsed, end)
	}
}
