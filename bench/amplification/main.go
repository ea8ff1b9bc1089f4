// Command amplification is the load generator of bench/amplification.sh. Against a
// running gateway it:
//
//  1. sends each worst-case document once: the most expensive documents the gateway's limits
//     still accept (cost just under --max-cost, the largest pages, __typename floods), checks each
//     is served and reads its cost from extensions.cost;
//  2. measures a cheap query alone (the baseline);
//  3. runs the four slowest of those documents in a loop, one client each, and measures the cheap
//     query again while they run;
//  4. prints a summary: latencies, OVERLOADED refusals, the gateway's CPU and peak RSS, and the
//     verdict against the target (p99 of the cheap query under load < 100 ms).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpugate/gpugate/internal/testutil"
)

type doc struct {
	name, query string
	cost        int
	single      time.Duration
}

const deviceFields = "id name status region verification gpuModel gpuCount lastSeenAt createdAt"

// candidates are the heaviest documents that pass the default limits (depth 10, 15 aliases,
// 20 root fields, 100 fields per selection, 15,000 tokens, cost 5,000); each is checked to be accepted before it is used.
func candidates() []doc {
	var d []doc
	// A fragment of aliased __typename on every node of a 100-node page: 2 + 100 × (1 + 48) = 4,902.
	var f strings.Builder
	for i := range 48 {
		fmt.Fprintf(&f, "t%d: __typename ", i)
	}
	d = append(d, doc{name: "typename-per-node", query: "{ devices(first: 100) { edges { node { ...F } } } } fragment F on Device { " + f.String() + "}"})
	// The widest selection allowed (100 fields) on every node of a 50-node page:
	// 2 + 50 × (1 + 98) = 4,952.
	var w strings.Builder
	for i := range 97 {
		fmt.Fprintf(&w, "t%d: __typename ", i)
	}
	d = append(d, doc{name: "widest-per-node", query: "{ devices(first: 50) { edges { node { id ...W } } } } fragment W on Device { " + w.String() + "}"})
	// Four full 100-device pages in four orders: 4 × 1,104.
	d = append(d, doc{name: "four-full-pages", query: `{
		a: devices(first: 100) { edges { cursor node { ` + deviceFields + ` } } pageInfo { hasNextPage } }
		b: devices(first: 100, orderBy: {field: NAME, direction: ASC}) { edges { cursor node { ` + deviceFields + ` } } pageInfo { hasNextPage } }
		c: devices(first: 100, orderBy: {field: NAME, direction: DESC}) { edges { cursor node { ` + deviceFields + ` } } pageInfo { hasNextPage } }
		d: devices(first: 100, orderBy: {field: CREATED_AT, direction: ASC}) { edges { cursor node { ` + deviceFields + ` } } pageInfo { hasNextPage } } }`})
	// Four name searches of 100 (a substring scan each): 4 × 1,104.
	d = append(d, doc{name: "four-searches", query: `{
		a: searchDevices(query: "ora", first: 100) { edges { cursor node { ` + deviceFields + ` } } pageInfo { hasNextPage } }
		b: searchDevices(query: "ula", first: 100) { edges { cursor node { ` + deviceFields + ` } } pageInfo { hasNextPage } }
		c: searchDevices(query: "h10", first: 100) { edges { cursor node { ` + deviceFields + ` } } pageInfo { hasNextPage } }
		d: searchDevices(query: "a10", first: 100) { edges { cursor node { ` + deviceFields + ` } } pageInfo { hasNextPage } } }`})
	// Every GPU field of 11 devices (GPU lists count 64 each): 2 + 11 × (1 + 1 + 1 + 64 × 7) = 4,963.
	d = append(d, doc{name: "gpus-of-11-devices", query: `{ devices(first: 11) { edges { node { id gpus { index uuid model pciDeviceId memoryMiB architecture computeCapability } } } } }`})
	return d
}

const cheapQuery = `{ devices(first: 5) { edges { node { id name status } } } }`

type result struct {
	latency    time.Duration
	overloaded bool
	err        error
}

var client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func send(url, query string) (result, int) {
	body, _ := json.Marshal(map[string]string{"query": query})
	start := time.Now()
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return result{err: err, latency: time.Since(start)}, 0
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close() // read to the end already: a failed close loses nothing
	res := result{latency: time.Since(start)}
	if err != nil {
		res.err = err
		return res, 0
	}
	var out struct {
		Errors []struct {
			Message    string
			Extensions struct{ Code string }
		}
		Extensions struct{ Cost struct{ Requested int } }
	}
	if err := json.Unmarshal(b, &out); err != nil {
		res.err = fmt.Errorf("HTTP %d, undecodable body: %.200s", resp.StatusCode, b)
		return res, 0
	}
	if resp.StatusCode == http.StatusServiceUnavailable && len(out.Errors) > 0 && out.Errors[0].Extensions.Code == "OVERLOADED" {
		res.overloaded = true
		return res, 0
	}
	if resp.StatusCode != http.StatusOK || len(out.Errors) > 0 {
		msg := ""
		if len(out.Errors) > 0 {
			msg = out.Errors[0].Extensions.Code + ": " + out.Errors[0].Message
		}
		res.err = fmt.Errorf("HTTP %d %s", resp.StatusCode, msg)
	}
	return res, out.Extensions.Cost.Requested
}

type stats struct {
	n, overloaded, errors int
	p50, p99, max         time.Duration
	firstErr              error
}

func summarize(rs []result) stats {
	var s stats
	var ls []time.Duration
	for _, r := range rs {
		switch {
		case r.overloaded:
			s.overloaded++
		case r.err != nil:
			s.errors++
			if s.firstErr == nil {
				s.firstErr = r.err
			}
		default:
			ls = append(ls, r.latency)
		}
	}
	s.n = len(ls)
	if len(ls) == 0 {
		return s
	}
	slices.Sort(ls)
	at := func(q float64) time.Duration { return ls[min(len(ls)-1, int(q*float64(len(ls))))] }
	s.p50, s.p99, s.max = at(0.50), at(0.99), ls[len(ls)-1]
	return s
}

func (s stats) String() string {
	out := fmt.Sprintf("n=%-6d p50=%-8s p99=%-8s max=%-8s overloaded=%d errors=%d", s.n, ms(s.p50), ms(s.p99), ms(s.max), s.overloaded, s.errors)
	if s.firstErr != nil {
		out += fmt.Sprintf(" (first: %v)", s.firstErr)
	}
	return out
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + "ms" }

// cheapLoop sends the cheap query from clients sequential clients, each pausing pause between
// requests, until stop is closed.
func cheapLoop(url string, clients int, pause time.Duration, stop <-chan struct{}) []result {
	var mu sync.Mutex
	var all []result
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, _ := send(url, cheapQuery)
				mu.Lock()
				all = append(all, r)
				mu.Unlock()
				time.Sleep(pause)
			}
		}()
	}
	wg.Wait()
	return all
}

func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

func statusKB(pid int, key string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key+":") {
			return strings.TrimSpace(strings.TrimPrefix(line, key+":"))
		}
	}
	return "?"
}

func main() {
	url := flag.String("url", "http://127.0.0.1:8080/graphql", "the gateway's GraphQL endpoint")
	duration := flag.Duration("duration", 20*time.Second, "length of each measurement")
	pid := flag.Int("pid", 0, "the gateway's process id, for its CPU time and RSS (0: not reported)")
	clients := flag.Int("cheap-clients", 2, "sequential clients sending the cheap query")
	pause := flag.Duration("cheap-pause", 10*time.Millisecond, "pause of each cheap client between requests")
	target := flag.Duration("target", 100*time.Millisecond, "p99 target of the cheap query under load")
	flag.Parse()
	if err := run(*url, *duration, *pid, *clients, *pause, *target); err != nil {
		fmt.Fprintln(os.Stderr, "amplification:", err)
		os.Exit(1)
	}
}

func run(url string, duration time.Duration, pid, clients int, pause, target time.Duration) error {
	attack := testutil.AmplificationDocument()
	for i := range 3 { // the first parses and validates; gqlgen caches the parsed document
		r, _ := send(url, attack)
		if r.err == nil || !strings.Contains(r.err.Error(), "QUERY_LIMIT") {
			return fmt.Errorf("the attack document of issue 7 was not refused with QUERY_LIMIT: %v", r.err)
		}
		if i == 0 || i == 2 {
			fmt.Printf("attack document of issue 7 (%d bytes): refused in %s (%s)\n", len(attack), ms(r.latency), map[int]string{0: "first send", 2: "third send"}[i])
		}
	}
	fmt.Println()
	docs := candidates()
	fmt.Println("worst-case accepted documents (each sent alone, twice; the second run is kept):")
	for i := range docs {
		var r result
		var cost int
		for range 2 {
			r, cost = send(url, docs[i].query)
		}
		if r.err != nil || r.overloaded {
			return fmt.Errorf("%s was not served: %v", docs[i].name, r.err)
		}
		docs[i].cost, docs[i].single = cost, r.latency
		fmt.Printf("  %-20s cost %5d  %6d bytes  %s\n", docs[i].name, cost, len(docs[i].query), ms(r.latency))
	}
	slices.SortFunc(docs, func(a, b doc) int { return int(b.single - a.single) })
	heavy := docs[:4]

	fmt.Printf("\ncheap query alone (%d clients, %s pause, %s): ", clients, pause, duration)
	stop := make(chan struct{})
	time.AfterFunc(duration, func() { close(stop) })
	base := summarize(cheapLoop(url, clients, pause, stop))
	fmt.Println(base)

	names := make([]string, len(heavy))
	for i, d := range heavy {
		names[i] = d.name
	}
	fmt.Printf("cheap query under load (4 clients looping %s): ", strings.Join(names, ", "))
	cpu0, t0 := cpuSeconds(pid), time.Now()
	stop = make(chan struct{})
	var heavyMu sync.Mutex
	var heavyResults []result
	var heavyDone atomic.Int64
	var wg sync.WaitGroup
	for _, d := range heavy {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, _ := send(url, d.query)
				heavyDone.Add(1)
				heavyMu.Lock()
				heavyResults = append(heavyResults, r)
				heavyMu.Unlock()
				if r.overloaded {
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // let the heavy clients start
	cheapStop := make(chan struct{})
	time.AfterFunc(duration, func() { close(cheapStop) })
	loaded := summarize(cheapLoop(url, clients, pause, cheapStop))
	close(stop)
	wg.Wait()
	elapsed := time.Since(t0)
	fmt.Println(loaded)
	fmt.Printf("worst-case documents under load:        %s (%.1f/s)\n", summarize(heavyResults), float64(heavyDone.Load())/elapsed.Seconds())
	if pid > 0 {
		fmt.Printf("gateway: %.1f CPU-seconds in %.1f s under load (%.2f cores); VmRSS %s, VmHWM %s\n",
			cpuSeconds(pid)-cpu0, elapsed.Seconds(), (cpuSeconds(pid)-cpu0)/elapsed.Seconds(), statusKB(pid, "VmRSS"), statusKB(pid, "VmHWM"))
	}
	verdict := "PASS"
	if loaded.p99 >= target || loaded.n == 0 || loaded.errors > 0 || loaded.overloaded > 0 {
		verdict = "FAIL"
	}
	fmt.Printf("\nverdict: cheap query p99 under load %s (target < %s): %s\n", ms(loaded.p99), ms(target), verdict)
	if verdict == "FAIL" {
		return errors.New("target missed")
	}
	return nil
}
