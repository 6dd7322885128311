package header

// DecodeError is why a received packet was dropped. Its values index the
// per-reason drop counters, so they are small and dense.
type DecodeError uint8

const (
	ErrTooShort    DecodeError = iota + 1 // shorter than its headers say
	ErrNotIPv4                            // outer header is not IPv4
	ErrProtocol                           // outer protocol is not the uplink's
	ErrWrongSource                        // not from the uplink's remote address
	ErrGREVersion                         // GRE version is not 0
	ErrGREFlags                           // RFC 1701 routing/strict/recursion bits set
	ErrChecksum                           // GRE checksum present and wrong
	ErrWrongKey                           // key absent or not the bond's key
	ErrNoSeq                              // data packet without a sequence number
	ErrInnerProto                         // payload is neither IPv4 nor IPv6
	ErrControl                            // malformed tunbond control message
	ErrTruncated                          // larger than the receive buffer
	NumDecodeErrors
)

var decodeErrorNames = [...]string{
	ErrTooShort:    "too_short",
	ErrNotIPv4:     "not_ipv4",
	ErrProtocol:    "protocol",
	ErrWrongSource: "wrong_source",
	ErrGREVersion:  "gre_version",
	ErrGREFlags:    "gre_flags",
	ErrChecksum:    "checksum",
	ErrWrongKey:    "wrong_key",
	ErrNoSeq:       "no_sequence",
	ErrInnerProto:  "inner_protocol",
	ErrControl:     "control",
	ErrTruncated:   "truncated",
}

// Reason is the metric label for e.
func (e DecodeError) Reason() string {
	if int(e) < len(decodeErrorNames) && decodeErrorNames[e] != "" {
		return decodeErrorNames[e]
	}
	return "unknown"
}

func (e DecodeError) Error() string { return "tunnel: bad packet: " + e.Reason() }
