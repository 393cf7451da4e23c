// Package fn holds Aloft's leaf domain types — functions, versions, aliases,
// invocations — their validation, and the user-facing error type. It imports
// nothing else from Aloft so every other package can depend on it.
package fn
