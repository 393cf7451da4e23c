// Package scale manages the instances of one function version: a Pool hands
// out concurrency slots (leases), starts instances on demand up to a hard
// maximum, queues requests in a bounded FIFO when every slot is taken, stops
// instances that stayed idle for the keep-alive, and keeps a warm minimum.
//
// What an instance is stays outside: the pool knows only the small Instance
// interface and a Start function given in its Config. Scaling decisions are
// pure functions of (state, now) in decide.go; Pool.Run is the one loop that
// applies them and owns every goroutine the pool starts.
package scale
