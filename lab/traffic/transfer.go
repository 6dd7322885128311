package traffic

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/tunbond/tunbond/lab/netns"
)

// TransferResult is the outcome of a TCP transfer.
type TransferResult struct {
	Bytes          int64
	SentSHA256     [32]byte
	ReceivedSHA256 [32]byte
	Duration       time.Duration
}

// GoodputMbps is the transfer's goodput in Mbit/s.
func (r TransferResult) GoodputMbps() float64 {
	return float64(r.Bytes) * 8 / r.Duration.Seconds() / 1e6
}

// Transfer sends size bytes of a pseudo-random stream over one TCP
// connection from src to dst listening on addr:port, hashing both ends.
// progress, if not nil, counts bytes received as they arrive.
func Transfer(ctx context.Context, src, dst *netns.Namespace, addr string, size int64, progress *atomic.Int64) (TransferResult, error) {
	var ln net.Listener
	if err := dst.Do(func() (err error) { ln, err = net.Listen("tcp4", net.JoinHostPort(addr, "0")); return }); err != nil {
		return TransferResult{}, err
	}
	defer ln.Close()
	type recv struct {
		n   int64
		sum [32]byte
		err error
	}
	got := make(chan recv, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- recv{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		var w io.Writer = h
		if progress != nil {
			w = io.MultiWriter(h, progressWriter{progress})
		}
		n, err := io.Copy(w, c)
		var r recv
		r.n, r.err = n, err
		copy(r.sum[:], h.Sum(nil))
		got <- r
	}()
	var c net.Conn
	d := net.Dialer{Timeout: 5 * time.Second}
	if err := src.Do(func() (err error) { c, err = d.DialContext(ctx, "tcp4", ln.Addr().String()); return }); err != nil {
		return TransferResult{}, err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	start := time.Now()
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{'t', 'u', 'n', 'b', 'o', 'n', 'd'})
	buf := make([]byte, 256<<10)
	for left := size; left > 0; {
		chunk := buf[:min(int64(len(buf)), left)]
		_, _ = rng.Read(chunk)
		h.Write(chunk)
		if _, err := c.Write(chunk); err != nil {
			return TransferResult{}, fmt.Errorf("send: %w", err)
		}
		left -= int64(len(chunk))
	}
	c.(*net.TCPConn).CloseWrite()
	var r recv
	select {
	case r = <-got:
	case <-ctx.Done():
		return TransferResult{}, ctx.Err()
	}
	res := TransferResult{Bytes: r.n, ReceivedSHA256: r.sum, Duration: time.Since(start)}
	copy(res.SentSHA256[:], h.Sum(nil))
	if r.err != nil {
		return res, fmt.Errorf("receive: %w", r.err)
	}
	if r.n != size {
		return res, fmt.Errorf("received %d of %d bytes", r.n, size)
	}
	if res.SentSHA256 != res.ReceivedSHA256 {
		return res, errors.New("SHA-256 differs between sender and receiver")
	}
	return res, nil
}

type progressWriter struct{ n *atomic.Int64 }

func (p progressWriter) Write(b []byte) (int, error) { p.n.Add(int64(len(b))); return len(b), nil }
