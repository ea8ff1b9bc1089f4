// Command gpugate is the GraphQL explorer and management gateway of a decentralized GPU network.
//
//	gpugate [serve]  run the gateway (default); with no DATABASE_URL it starts its own PostgreSQL
//	gpugate migrate  apply the embedded database migrations
//	gpugate seed     load deterministic demo data into an empty database
//
// Each command lives in package cli, one file per command.
package main

//go:generate go tool gqlgen generate

import (
	"os"

	"github.com/gpugate/gpugate/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
