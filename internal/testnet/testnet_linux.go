package testnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The links are numbered /30 blocks of TEST-NET-3 (RFC 5737), never
// routed anywhere else; the interface name carries the block number so
// test processes running at once never pick the same one.
var (
	subnet = netip.MustParsePrefix("203.0.113.0/24")
	blocks = 1 << (32 - subnet.Bits() - 2)
)

const ifPrefix = "aot"

// Network is one outside network.
type Network struct {
	// Addr is the outside end's address: listen here, call it from a
	// function.
	Addr netip.Addr
	// HostAddr is the host's address on the link: the source address a
	// masqueraded function's connection arrives from.
	HostAddr netip.Addr

	ns   netns.NsHandle
	link string
}

var next struct {
	sync.Mutex
	block int
}

// New creates an outside network. Close removes it.
func New() (*Network, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("outside test network: needs root to create a network namespace and a veth pair")
	}
	var ns netns.NsHandle
	err := onThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		if ns, err = netns.New(); err != nil {
			return err
		}
		return netns.Set(orig)
	})
	if err != nil {
		if ns.IsOpen() {
			_ = ns.Close()
		}
		return nil, fmt.Errorf("outside test network: new netns: %w", err)
	}
	n := &Network{ns: ns}
	if err := n.attach(); err != nil {
		_ = n.Close()
		return nil, fmt.Errorf("outside test network: %w", err)
	}
	return n, nil
}

// attach creates and configures the veth pair of a free block.
func (n *Network) attach() error {
	next.Lock()
	defer next.Unlock()
	for range blocks {
		b := next.block
		next.block = (b + 1) % blocks
		name := ifPrefix + strconv.Itoa(b)
		err := netlink.LinkAdd(&netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: name},
			PeerName:      "eth0",
			PeerNamespace: netlink.NsFd(int(n.ns)),
		})
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return fmt.Errorf("create link %s: %w", name, err)
		}
		n.link = name
		base := subnet.Addr().As4()
		base[3] += byte(b * 4)
		n.HostAddr = netip.AddrFrom4(base).Next()
		n.Addr = n.HostAddr.Next()
		return n.configure()
	}
	return fmt.Errorf("all %d links of %s in use", blocks, subnet)
}

func (n *Network) configure() error {
	hl, err := netlink.LinkByName(n.link)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(hl, &netlink.Addr{IPNet: ipNet(n.HostAddr)}); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(n.ns, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			return err
		}
		if name == "eth0" {
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(n.Addr)}); err != nil {
				return err
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
	}
	return nil
}

func ipNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(30, 32)}
}

// Listen listens on TCP port port (0: any free one) of Addr, inside the
// outside network.
func (n *Network) Listen(port int) (net.Listener, error) {
	var ln net.Listener
	err := onThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		if err := netns.Set(n.ns); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", netip.AddrPortFrom(n.Addr, uint16(port)).String())
		if serr := netns.Set(orig); serr != nil {
			if ln != nil {
				_ = ln.Close()
			}
			return errors.Join(err, serr)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("outside test network: listen: %w", err)
	}
	return ln, nil
}

// Close deletes the link and releases the namespace; sockets made in it
// keep it alive until they close.
func (n *Network) Close() error {
	var err error
	if n.link != "" {
		if l, lerr := netlink.LinkByName(n.link); lerr == nil {
			err = netlink.LinkDel(l)
		}
	}
	if n.ns.IsOpen() {
		err = errors.Join(err, n.ns.Close())
	}
	return err
}

// onThread runs f on a locked OS thread of its own. f must leave the
// thread in the namespaces it found; if f fails, the thread stays locked
// and the runtime discards it, whatever namespace it is in.
func onThread(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := f()
		if err == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
