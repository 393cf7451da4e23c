// Package testnet gives tests and the benchmark an outside network: a
// network namespace of its own, linked to the host by a veth pair, that
// stands for a service on the internet. A function with network access
// reaches it the way it would reach any outside address: through its
// egress link, routed and masqueraded by the host. Functions cannot reach
// the host's loopback, so services a test wants them to call listen here.
//
// It needs root (CAP_NET_ADMIN); New reports why it cannot run.
package testnet
