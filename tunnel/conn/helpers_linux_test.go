package conn

import (
	"bytes"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Helpers of the raw and UDP uplinks' tests.

// packets returns packets of the given sizes whose bytes depend on seed and
// their index.
func packets(seed int, sizes ...int) [][]byte {
	pkts := make([][]byte, len(sizes))
	for i, n := range sizes {
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(seed*31 + i*7 + j)
		}
		pkts[i] = p
	}
	return pkts
}

func repeat(n, size int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = size
	}
	return s
}

func checkSame(t testing.TB, got, want [][]byte) {
	t.Helper()
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("packet %d: got %d bytes %x…, want %d bytes %x…", i, len(got[i]), head(got[i]), len(want[i]), head(want[i]))
		}
	}
}

func head(p []byte) []byte { return p[:min(len(p), 8)] }

// receiver reads from one ReceiveFunc with a fixed set of buffers.
type receiver struct {
	fn    ReceiveFunc
	bufs  [][]byte
	sizes []int
	from  []netip.AddrPort
	calls []int // packets per call, for the last collect
}

func newReceiver(fn ReceiveFunc, batch, bufSize int) *receiver {
	r := &receiver{fn: fn, bufs: make([][]byte, batch), sizes: make([]int, batch), from: make([]netip.AddrPort, batch)}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, bufSize)
	}
	return r
}

// collect reads until n packets came, returning copies and their from[].
func (r *receiver) collect(t testing.TB, n int) (pkts [][]byte, from []netip.AddrPort) {
	t.Helper()
	r.calls = r.calls[:0]
	for len(pkts) < n {
		k, err := r.fn(r.bufs, r.sizes, r.from)
		if err != nil {
			t.Fatalf("receive after %d of %d packets: %v", len(pkts), n, err)
		}
		r.calls = append(r.calls, k)
		for i := 0; i < k; i++ {
			pkts = append(pkts, bytes.Clone(r.bufs[i][:r.sizes[i]]))
			from = append(from, r.from[i])
		}
	}
	if len(pkts) != n {
		t.Fatalf("received %d packets, want %d", len(pkts), n)
	}
	return pkts, from
}

// receiveN reads until n packets came, keeping nothing (and allocating
// nothing): for allocation tests and benchmarks.
func (r *receiver) receiveN(n int) error {
	for got := 0; got < n; {
		k, err := r.fn(r.bufs, r.sizes, r.from)
		if err != nil {
			return err
		}
		got += k
	}
	return nil
}

// benchmarkExchange sends pkts with tx and receives them with r, once per
// iteration.
func benchmarkExchange(b *testing.B, tx Uplink, r *receiver, pkts [][]byte) {
	size := 0
	for _, p := range pkts {
		size += len(p)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if n, err := tx.Send(pkts); n != len(pkts) || err != nil {
			b.Fatal("Send: ", n, err)
		}
		if err := r.receiveN(len(pkts)); err != nil {
			b.Fatal(err)
		}
	}
}

// closeWakesReceiver checks that closing u wakes its first receiver, blocked
// in the poller inside frame (a function of the stack), with an error.
func closeWakesReceiver(t *testing.T, u Uplink, frame string) {
	t.Helper()
	r := newReceiver(u.Receivers()[0], 4, 2048)
	errc := make(chan error, 1)
	go func() {
		_, err := r.fn(r.bufs, r.sizes, r.from)
		errc <- err
	}()
	awaitIOWait(t, frame)
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("receive after Close returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not wake the receiver")
	}
}

// awaitIOWait waits until a goroutine is parked in the poller inside fn.
func awaitIOWait(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for i := 0; i < 1e6; i++ {
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "[IO wait") && strings.Contains(g, fn) {
				return
			}
		}
		runtime.Gosched()
	}
	t.Fatalf("no goroutine blocked in %s", fn)
}
