package bond

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tunbond/tunbond/tunnel/header"
)

// RedundancyConfig is the class of packets sent on the two best paths at
// once (the receiver keeps the first copy): small packets, a DSCP (EF for
// voice), TCP handshakes. Off unless a field is set.
type RedundancyConfig struct {
	MaxSize  int      `mapstructure:"max_size"`  // inner packets of at most this many bytes; 0: none by size
	DSCP     []string `mapstructure:"dscp"`      // DSCP names (ef, cs1..cs7, af11..af43) or numbers 0..63
	TCPFlags []string `mapstructure:"tcp_flags"` // syn, fin, rst: TCP segments with any of them
}

// redundancy is the compiled policy; the zero value sends nothing twice.
type redundancy struct {
	maxSize  int
	dscp     [64]bool
	anyDSCP  bool
	tcpFlags uint8
}

func (r *redundancy) on() bool { return r.maxSize > 0 || r.anyDSCP || r.tcpFlags != 0 }

var dscpNames = map[string]int{"ef": 46, "va": 44, "be": 0, "df": 0}

func init() {
	for i := 1; i <= 7; i++ {
		dscpNames[fmt.Sprintf("cs%d", i)] = i * 8
	}
	for c := 1; c <= 4; c++ {
		for d := 1; d <= 3; d++ {
			dscpNames[fmt.Sprintf("af%d%d", c, d)] = c*8 + d*2
		}
	}
}

// compile checks the config; each problem names its key.
func (c RedundancyConfig) compile() (redundancy, []string) {
	var r redundancy
	var bad []string
	if c.MaxSize < 0 || c.MaxSize > 65535 {
		bad = append(bad, fmt.Sprintf("redundancy.max_size: %d out of range 0..65535", c.MaxSize))
	} else {
		r.maxSize = c.MaxSize
	}
	for i, s := range c.DSCP {
		n, ok := dscpNames[strings.ToLower(s)]
		if !ok {
			v, err := strconv.Atoi(s)
			if err != nil || v < 0 || v > 63 {
				bad = append(bad, fmt.Sprintf("redundancy.dscp[%d]: %q is not a DSCP (ef, cs0..cs7, af11..af43 or 0..63)", i, s))
				continue
			}
			n = v
		}
		r.dscp[n], r.anyDSCP = true, true
	}
	for i, s := range c.TCPFlags {
		switch strings.ToLower(s) {
		case "syn":
			r.tcpFlags |= header.TCPFlagSYN
		case "fin":
			r.tcpFlags |= header.TCPFlagFIN
		case "rst":
			r.tcpFlags |= header.TCPFlagRST
		default:
			bad = append(bad, fmt.Sprintf("redundancy.tcp_flags[%d]: %q is not syn, fin or rst", i, s))
		}
	}
	return r, bad
}

// matches reports whether the inner packet is of the class sent twice.
func (r *redundancy) matches(pkt []byte) bool {
	if len(pkt) <= r.maxSize {
		return true
	}
	if len(pkt) < 1 {
		return false
	}
	var ds uint8
	var proto uint8
	var l4 []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < header.IPv4HeaderLen {
			return false
		}
		ip := header.IPv4(pkt)
		ds, proto = ip.TOS()>>2, ip.Protocol()
		if hl := ip.HeaderLen(); hl >= header.IPv4HeaderLen && hl <= len(pkt) && ip.FragmentOffset() == 0 {
			l4 = pkt[hl:] // the first fragment holds the transport header
		}
	case 6:
		if len(pkt) < header.IPv6HeaderLen {
			return false
		}
		ip := header.IPv6(pkt)
		ds, proto, l4 = ip.TrafficClass()>>2, ip.NextHeader(), pkt[header.IPv6HeaderLen:]
	default:
		return false
	}
	if r.anyDSCP && r.dscp[ds] {
		return true
	}
	return r.tcpFlags != 0 && proto == header.ProtoTCP && len(l4) >= 14 && header.TCP(l4).Flags()&r.tcpFlags != 0
}
