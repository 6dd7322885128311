package encap

import (
	"testing"

	"github.com/tunbond/tunbond/tunnel/header"
)

// FuzzDecap feeds arbitrary outer packets to both codecs: they must return
// an error or a slice inside the packet, never panic.
func FuzzDecap(f *testing.F) {
	remote := [4]byte{198, 51, 100, 1}
	gre := GRE{Key: 7}
	f.Add(outerPkt(remote, header.ProtoGRE, greData(gre, 1, innerV4)))
	f.Add(outerPkt(remote, header.ProtoGRE, greData(GRE{Key: 7, Checksum: true}, 1, innerV4)))
	f.Add(outerPkt(remote, header.ProtoGRE, gre.EncapControl(make([]byte, 128), remote, [4]byte{}, header.ControlFields{Type: header.ControlProbe})))
	f.Add(outerPkt(remote, header.ProtoIPIP, innerV4))
	fb := make([]byte, Headroom+header.FeedbackPacketLen)
	header.EncodeFeedbackPacket(fb[Headroom:], remote, [4]byte{}, header.FeedbackFields{
		ControlFields: header.ControlFields{Epoch: 1}, HighestSeq: 5, DeliveredPackets: 2})
	f.Add(outerPkt(remote, header.ProtoGRE, gre.WrapControl(fb, header.FeedbackPacketLen)))
	sealed := make([]byte, 64)
	n := gre.SealedHeader(sealed, 32, 9, true)
	f.Add(outerPkt(remote, header.ProtoGRE, sealed[32-n:]))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		check := func(d Decoded) {
			if d.Off < 0 || d.Off+d.Len > len(pkt) || d.Len < 0 || d.Kind == KindSealed && (d.Hdr < 0 || d.Hdr > d.Len) {
				t.Fatalf("decoded %+v outside a %d-byte packet", d, len(pkt))
			}
		}
		// GRE-in-UDP: the same bytes as a UDP payload (no outer header).
		if d, err := gre.DecapPayload(pkt, remote); err == nil {
			check(d)
		}
		for _, c := range []Encapsulation{gre, GRE{Key: 7, Checksum: true}, GRE{Key: 7, Frames: true}, IPIP{}} {
			d, err := c.Decap(pkt, remote)
			if err != nil {
				continue
			}
			check(d)
			if d.Kind == KindControl {
				c := header.Control(pkt[d.Off : d.Off+d.Len])
				_ = c.Fields()
				if c.Type() == header.ControlFeedback {
					_ = header.Feedback(c).Fields() // what the engine reads of a feedback
				}
			}
		}
	})
}
