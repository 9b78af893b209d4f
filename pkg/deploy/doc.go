// Package deploy holds no code, only checks of the deployment files: the
// Dockerfile and .dockerignore, docker-compose.yaml, and the Grafana and
// Prometheus configuration under provisioning/. No Docker engine is needed:
// the tests parse the files and cross-check them against each other and
// against the sources they refer to (plugin.json, the CLI's flags, the
// metric names Spangraph writes), so that a renamed flag, a typo in a
// datasource uid or a PromQL syntax error fails `go test` instead of
// `docker compose up`.
package deploy
