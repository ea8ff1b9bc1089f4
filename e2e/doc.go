// Package e2e holds end-to-end tests of the gateway against independent, real components: a
// real PostgreSQL (db/dbtest) and a real OpenID provider, Dex, built from the separate module
// in tools/dex (so that Dex's dependencies never enter gpugate's go.mod). It has no code of
// its own; see dex_test.go.
package e2e
