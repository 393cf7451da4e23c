//go:build !linux

package testnet

import (
	"errors"
	"net"
	"net/netip"
)

// Network is one outside network; outside Linux there are none.
type Network struct {
	Addr, HostAddr netip.Addr
}

var errUnsupported = errors.New("outside test network: needs Linux network namespaces")

// New fails outside Linux.
func New() (*Network, error) { return nil, errUnsupported }

// Listen fails outside Linux.
func (n *Network) Listen(port int) (net.Listener, error) { return nil, errUnsupported }

// Close does nothing outside Linux.
func (n *Network) Close() error { return nil }
