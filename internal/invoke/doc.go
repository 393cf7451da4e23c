// Package invoke is the invoker: it resolves a function name and qualifier
// to a version, keeps one scale.Pool per (function, version), starts
// sandboxed instances speaking the function's runtime protocol, runs each
// invocation on a leased instance under its timeout, and records what
// happened — the function's own output tagged with the invocation id, and
// START/END/REPORT platform lines like Lambda's.
//
// Crashes, out-of-memory kills and timeouts become Lambda-style error
// results (Runtime.ExitError, Runtime.OutOfMemory, Sandbox.Timedout) and
// the instance is replaced. A change to a function's $LATEST drains the
// pools of its previous revision gracefully.
package invoke
