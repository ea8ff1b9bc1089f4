package worker

// The GraphQL client in client/ is generated from the gateway's schema and operations.graphql.
//go:generate go tool genqlient genqlient.yaml
