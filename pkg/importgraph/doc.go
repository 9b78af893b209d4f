// Package importgraph holds no code, only a check of the module's import
// graph: which packages may reach the storage layer, the Grafana SDK and
// the CLI, and that the two span processors stay independent. It reads the
// graph with `go list`, so that a new import across a boundary fails
// `go test` rather than a review.
package importgraph
