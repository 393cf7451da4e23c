// Package e2e holds Aloft's end-to-end tests: they build the real aloft
// binary once, run it as a server on 127.0.0.1 with a temporary data
// directory, deploy real functions from source (Go with aws-lambda-go,
// Node, Python, a Go http server) and drive them through the CLI, the
// invoke API and HTTP.
package e2e
