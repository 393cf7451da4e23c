package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Egress links. An instance with Spec.Network keeps its private network
// namespace and gets one more interface: eth0, one end of a veth pair whose
// other end, alv<block>, stays on the host. Each pair is a /30 block of the
// egress subnet (host .1, instance .2) and the instance's default route
// points at the host. The host forwards and masquerades what the instance
// sends, and an nftables table of its own (ip aloft) rejects everything
// else: traffic between instances, to the host itself, to link-local
// addresses (cloud metadata services), and connections the host opens
// towards an instance. The instance therefore reaches the outside world
// but neither the host's services, loopback included, nor other instances
// or their Runtime API listeners.
//
// The interface names carry the block number, so several Aloft processes
// on one host with the same subnet never pick the same block: the kernel
// refuses a second alv<block>.
const (
	egressIfPrefix = "alv"   // host-side interface names
	egressTable    = "aloft" // nftables table (family ip)
	egressPeer     = "eth0"  // the instance's side
)

// icmpAdminProhibited is the ICMP destination-unreachable code rejected
// packets get ("communication administratively prohibited").
const icmpAdminProhibited = 13

// egress hands out egress links. Its methods are safe for concurrent use.
type egress struct {
	subnet netip.Prefix
	blocks int // /30 blocks in subnet

	mu    sync.Mutex
	ready bool // forwarding on and the nftables table installed
	used  map[int]bool
	next  int
}

// egressLink is one instance's link: a block of the subnet.
type egressLink struct{ block int }

// name is the host side's interface name.
func (l *egressLink) name() string { return egressIfPrefix + strconv.Itoa(l.block) }

func newEgress(subnet netip.Prefix) *egress {
	return &egress{subnet: subnet, blocks: 1 << (32 - subnet.Bits() - 2), used: map[int]bool{}}
}

// addrs returns the host's and the instance's address of block b.
func (g *egress) addrs(b int) (host, inst netip.Addr) {
	base := g.subnet.Addr().As4()
	n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	n += uint32(b) * 4
	host = netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n) + 1})
	return host, host.Next()
}

// attach gives the network namespace nsFD an egress link.
func (g *egress) attach(nsFD int) (*egressLink, error) {
	if err := g.prepareHost(); err != nil {
		return nil, err
	}
	l, err := g.create(nsFD)
	if err != nil {
		return nil, err
	}
	if err := g.configure(l, nsFD); err != nil {
		g.detach(l)
		return nil, fmt.Errorf("egress link %s: %w", l.name(), err)
	}
	return l, nil
}

// create makes the veth pair of a free block, its peer already in nsFD.
func (g *egress) create(nsFD int) (*egressLink, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for range g.blocks {
		b := g.next
		g.next = (g.next + 1) % g.blocks
		if g.used[b] {
			continue
		}
		l := &egressLink{block: b}
		err := netlink.LinkAdd(&netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: l.name()},
			PeerName:      egressPeer,
			PeerNamespace: netlink.NsFd(nsFD),
		})
		if errors.Is(err, unix.EEXIST) {
			continue // another Aloft process holds the block
		}
		if err != nil {
			return nil, fmt.Errorf("create egress link %s: %w", l.name(), err)
		}
		g.used[b] = true
		return l, nil
	}
	return nil, fmt.Errorf("egress subnet %s: all %d links in use", g.subnet, g.blocks)
}

// configure addresses both ends, brings them up and routes the instance's
// traffic through the host.
func (g *egress) configure(l *egressLink, nsFD int) error {
	host, inst := g.addrs(l.block)
	hl, err := netlink.LinkByName(l.name())
	if err != nil {
		return err
	}
	// No IPv6 on the host side: its link-local address would let the
	// instance reach the host's services listening on [::], which the
	// (IPv4) firewall does not see.
	err = os.WriteFile("/proc/sys/net/ipv6/conf/"+l.name()+"/disable_ipv6", []byte("1\n"), 0o644)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable IPv6 on the host side: %w", err)
	}
	if err := netlink.AddrAdd(hl, &netlink.Addr{IPNet: ipNet(host, 30)}); err != nil {
		return fmt.Errorf("address host side: %w", err)
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		return fmt.Errorf("bring host side up: %w", err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(nsFD), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open instance netns: %w", err)
	}
	defer h.Close()
	pl, err := h.LinkByName(egressPeer)
	if err != nil {
		return err
	}
	if err := h.AddrAdd(pl, &netlink.Addr{IPNet: ipNet(inst, 30)}); err != nil {
		return fmt.Errorf("address instance side: %w", err)
	}
	if err := h.LinkSetUp(pl); err != nil {
		return fmt.Errorf("bring instance side up: %w", err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Gw: host.AsSlice()}); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

// detach deletes l's host side (if the instance's namespace has not taken
// the pair with it already) and frees its block.
func (g *egress) detach(l *egressLink) {
	if hl, err := netlink.LinkByName(l.name()); err == nil {
		_ = netlink.LinkDel(hl)
	}
	g.mu.Lock()
	delete(g.used, l.block)
	g.mu.Unlock()
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
}

// prepareHost turns on IPv4 forwarding and installs the firewall, once.
func (g *egress) prepareHost() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ready {
		return nil
	}
	if err := g.checkFree(); err != nil {
		return err
	}
	if err := enableForwarding(); err != nil {
		return err
	}
	if err := installFirewall(); err != nil {
		return err
	}
	g.ready = true
	return nil
}

// checkFree reports an error when the host already uses the subnet: an
// address or a route (but the default route) overlapping it on an
// interface that is not an egress link. The links' routes would shadow
// those addresses.
func (g *egress) checkFree() error {
	names := map[int]string{}
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("egress subnet: list links: %w", err)
	}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	inUse := func(what string, p netip.Prefix, link int) error {
		if strings.HasPrefix(names[link], egressIfPrefix) || !p.IsValid() || p.Bits() == 0 || !p.Overlaps(g.subnet) {
			return nil
		}
		return fmt.Errorf("egress subnet %s is in use on this host (%s %s on %s): choose another with --egress-subnet", g.subnet, what, p, names[link])
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("egress subnet: list addresses: %w", err)
	}
	for _, a := range addrs {
		if err := inUse("address", prefixOf(a.IPNet), a.LinkIndex); err != nil {
			return err
		}
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("egress subnet: list routes: %w", err)
	}
	for _, r := range routes {
		if err := inUse("route", prefixOf(r.Dst), r.LinkIndex); err != nil {
			return err
		}
	}
	return nil
}

// prefixOf converts n; a nil n is the invalid prefix.
func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a, bits)
}

const forwardingSysctl = "/proc/sys/net/ipv4/ip_forward"

func enableForwarding() error {
	b, err := os.ReadFile(forwardingSysctl)
	if err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(forwardingSysctl, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding for network instances: %w", err)
	}
	return nil
}

// installFirewall (re)writes the table in one transaction, so Aloft
// processes sharing a host each install the same rules without doubling
// them. The rules match interface names only, whatever subnet each
// process uses; the table stays when Aloft exits and is inert while no
// alv interface exists.
func installFirewall() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: egressTable})
	c.FlushTable(t)
	chain := func(name string, hook *nftables.ChainHook, prio *nftables.ChainPriority, typ nftables.ChainType) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Hooknum: hook, Priority: prio, Type: typ})
	}
	forward := chain("forward", nftables.ChainHookForward, nftables.ChainPriorityFilter, nftables.ChainTypeFilter)
	input := chain("input", nftables.ChainHookInput, nftables.ChainPriorityFilter, nftables.ChainTypeFilter)
	output := chain("output", nftables.ChainHookOutput, nftables.ChainPriorityFilter, nftables.ChainTypeFilter)
	post := chain("postrouting", nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, nftables.ChainTypeNAT)
	reject := []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: icmpAdminProhibited}}
	rule := func(ch *nftables.Chain, parts ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: slices.Concat(parts...)})
	}
	from, to := ifname(expr.MetaKeyIIFNAME), ifname(expr.MetaKeyOIFNAME)
	// Instance to instance, of this process or another.
	rule(forward, from, to, reject)
	// Link-local destinations: cloud metadata services hand out the host's credentials.
	rule(forward, from, daddrIn(netip.MustParsePrefix("169.254.0.0/16")), reject)
	// The host's own addresses and services.
	rule(input, from, reject)
	// New connections from the host into an instance.
	rule(output, to, ctNew(), reject)
	rule(post, from, []expr.Any{&expr.Masq{}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table %s: %w", egressTable, err)
	}
	return nil
}

// ifname matches an egress interface name (the prefix only) by key.
func ifname(key expr.MetaKey) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(egressIfPrefix)},
	}
}

// daddrIn matches an IPv4 destination in p.
func daddrIn(p netip.Prefix) []expr.Any {
	mask := net.CIDRMask(p.Bits(), 32)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
	}
}

// ctNew matches the first packet of a connection.
func ctNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}
