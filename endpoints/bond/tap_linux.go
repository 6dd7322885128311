package bond

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/songgao/water"
	"golang.zx2c4.com/wireguard/tun"
)

// tapDevice is the TAP of mode l2, opened with songgao/water, as the
// tun.Device the engine reads and writes: one frame per read and per write.
// water opens the TAP without IFF_VNET_HDR, so the kernel hands no
// offloaded super-frames and takes no batches (README: what it costs). The
// file is non-blocking and on Go's poller, so Close ends a blocked Read.
type tapDevice struct {
	ifce      *water.Interface
	file      *os.File
	name      string
	mtu       int
	events    chan tun.Event
	closeOnce sync.Once
}

// openWaterTAP creates the TAP called name (it goes when its file is closed).
// The caller sets its MTU, bridge and state through the host.
func openWaterTAP(name string, mtu int) (tun.Device, error) {
	ifce, err := water.New(water.Config{DeviceType: water.TAP, PlatformSpecificParams: water.PlatformSpecificParams{Name: name}})
	if err != nil {
		return nil, err
	}
	f, ok := ifce.ReadWriteCloser.(*os.File)
	if !ok {
		ifce.Close()
		return nil, errors.New("water gave no file for the TAP")
	}
	t := &tapDevice{ifce: ifce, file: f, name: ifce.Name(), mtu: mtu, events: make(chan tun.Event, 1)}
	t.events <- tun.EventUp
	return t, nil
}

func (t *tapDevice) File() *os.File { return t.file }

// Read reads one frame into bufs[0][offset:].
func (t *tapDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.file.Read(bufs[0][offset:])
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	return 1, nil
}

// Write writes each frame bufs[i][offset:], one write each.
func (t *tapDevice) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		if _, err := t.file.Write(b[offset:]); err != nil {
			return i, fmt.Errorf("TAP %s: %w", t.name, err)
		}
	}
	return len(bufs), nil
}

func (t *tapDevice) MTU() (int, error)        { return t.mtu, nil }
func (t *tapDevice) Name() (string, error)    { return t.name, nil }
func (t *tapDevice) Events() <-chan tun.Event { return t.events }
func (t *tapDevice) BatchSize() int           { return 1 }

func (t *tapDevice) Close() error {
	var err error
	t.closeOnce.Do(func() {
		err = t.file.Close()
		close(t.events)
	})
	return err
}
