package tunnel

import "testing"

// FuzzDecap feeds arbitrary outer packets to both codecs: they must return
// an error or a slice inside the packet, never panic.
func FuzzDecap(f *testing.F) {
	remote := [4]byte{198, 51, 100, 1}
	gre := Codec{Key: 7}
	f.Add(outer(remote, ProtoGRE, greData(gre, 1, innerV4)))
	f.Add(outer(remote, ProtoGRE, greData(Codec{Key: 7, Checksum: true}, 1, innerV4)))
	f.Add(outer(remote, ProtoGRE, gre.EncapControl(make([]byte, 128), remote, [4]byte{}, ControlFields{Type: ControlProbe})))
	f.Add(outer(remote, ProtoIPIP, innerV4))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		for _, c := range []Codec{gre, {Key: 7, Checksum: true}, {Encap: EncapIPIP}} {
			d, err := c.Decap(pkt, remote)
			if err != nil {
				continue
			}
			if d.Off < 0 || d.Off+d.Len > len(pkt) || d.Len < 0 {
				t.Fatalf("decoded %+v outside a %d-byte packet", d, len(pkt))
			}
			if d.Kind == KindControl {
				_ = Control(pkt[d.Off : d.Off+d.Len]).Fields()
			}
		}
	})
}

// FuzzGRE checks Validate and the accessors on arbitrary GRE headers.
func FuzzGRE(f *testing.F) {
	f.Add(greData(Codec{Key: 7}, 1, innerV4))
	f.Add(mustHex("b0000800123400000000000700000001"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g := GRE(b)
		if g.Validate() != nil {
			return
		}
		_ = g.Payload()
		if g.HasKey() {
			_ = g.Key()
		}
		if g.HasSeq() {
			_ = g.Seq()
		}
	})
}
