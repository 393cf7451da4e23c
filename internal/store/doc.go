// Package store keeps everything Aloft must not lose across a restart in NATS
// JetStream: functions, versions and aliases in a key-value bucket, code
// packages in an object store, and function logs in a bounded stream.
//
// By default Open starts a nats-server inside the process, with JetStream on
// DataDir/nats and no network listener, and connects to it in-process. With
// Config.NATSURL set, the same code talks to an external NATS server or
// cluster instead.
//
// # Layout
//
// KV bucket "functions" (history 1, file storage) holds, per tenant:
//
//	<tenant>.fn.<function>                  fn.Function ($LATEST), JSON
//	<tenant>.ver.<function>.<0000000007>    fn.Version, JSON; the number zero-padded to 10 digits so keys sort
//	<tenant>.alias.<function>.<alias>       fn.Alias, JSON
//
// Function names are [a-z0-9-], alias names [A-Za-z0-9_-] and tenants
// [A-Za-z0-9_-], so every key token is a valid NATS subject token. The KV
// revision of a function's key is its compare-and-set token (UpdateFunction).
//
// Object store bucket "code" holds code packages named by the lower-case hex
// sha256 of their bytes; the same bytes are stored once.
//
// Stream "LOGS" (file storage, discard old, bounded by Config.LogMaxBytes
// and Config.LogMaxAge) holds one message per log line, JSON fn.LogLine, on
// subject logs.<tenant>.<function>.
//
// Watch follows the functions bucket so every node's caches can follow the
// store.
//
// # Errors
//
// Errors meant for clients are *fn.Error: fn.NotFound for a missing
// function, version, alias or code package; fn.Conflict for a create over an
// existing record or a compare-and-set that lost; fn.Invalid for a tenant,
// function or alias name that cannot be a key. Every other error is internal
// (NATS unreachable, a corrupt record) and wraps the operation.
package store
