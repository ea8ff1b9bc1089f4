package testutil

import (
	"fmt"
	"strings"
)

// AmplificationDocument is the attack document of the hardening issue: a fragment of 4,500
// aliased __typename spread on each node of three 100-node lists (~80 KB, under the token and
// body limits). The gateway must refuse it before execution (QUERY_LIMIT); the gateway tests
// and bench/amplification send it.
func AmplificationDocument() string {
	var b strings.Builder
	b.WriteString("{ ")
	for _, a := range []string{"a", "b", "c"} {
		fmt.Fprintf(&b, "%s: devices(first: 100) { edges { node { ...F } } } ", a)
	}
	b.WriteString("}\nfragment F on Device {")
	for i := range 4500 {
		fmt.Fprintf(&b, " t%d: __typename", i)
	}
	b.WriteString(" }")
	return b.String()
}
