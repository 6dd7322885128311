package header

// EtherType values carried in GRE's protocol type field and Ethernet frames.
const (
	EtherTypeIPv4 uint16 = 0x0800
	EtherTypeARP  uint16 = 0x0806
	EtherTypeVLAN uint16 = 0x8100 // IEEE 802.1Q tag
	EtherTypeIPv6 uint16 = 0x86DD
	EtherTypeTEB  uint16 = 0x6558 // Transparent Ethernet Bridging (gretap)
)
