package session

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// KeyLen is the length of the configured key.
const KeyLen = 32

// Key is the configured key both ends of a bond share (auth.key_file). It
// has no String method, so that a %v in a log line cannot print it.
type Key [KeyLen]byte

// GenerateKey draws a key from r (crypto/rand when nil), as `tunbond
// genkey` prints it.
func GenerateKey(r io.Reader) (Key, error) {
	if r == nil {
		r = rand.Reader
	}
	var k Key
	if _, err := io.ReadFull(r, k[:]); err != nil {
		return Key{}, fmt.Errorf("generate key: %w", err)
	}
	if k == (Key{}) {
		return Key{}, errors.New("generate key: the random source gave 32 zero bytes")
	}
	return k, nil
}

// Base64 is the key's text: standard base64 with padding, 44 characters,
// the line `tunbond genkey` prints and a key file holds.
func (k Key) Base64() string { return base64.StdEncoding.EncodeToString(k[:]) }

// ParseKey reads a key's text: one line of standard base64 (surrounding
// space and one trailing newline allowed) that decodes to 32 bytes, not all
// zero.
func ParseKey(s string) (Key, error) {
	t := strings.TrimSpace(s)
	if strings.ContainsAny(t, " \t\r\n") {
		return Key{}, errors.New("key: must be one line of base64 (as tunbond genkey prints)")
	}
	b, err := base64.StdEncoding.Strict().DecodeString(t)
	if err != nil {
		return Key{}, errors.New("key: not base64 (as tunbond genkey prints)")
	}
	if len(b) != KeyLen {
		return Key{}, fmt.Errorf("key: %d bytes, want %d (as tunbond genkey prints)", len(b), KeyLen)
	}
	var k Key
	copy(k[:], b)
	if k == (Key{}) {
		return Key{}, errors.New("key: all zero")
	}
	return k, nil
}

// CheckKeyFileMode returns an error naming path and mode when mode lets the
// file's group or others read it, write it or run it, or when it is not a
// regular file. Writable counts too: who can replace the key can join the
// bond.
func CheckKeyFileMode(path string, mode fs.FileMode) error {
	if !mode.IsRegular() {
		return fmt.Errorf("key file %s is not a regular file (%v)", path, mode.Type())
	}
	if p := mode.Perm(); p&0o077 != 0 {
		return fmt.Errorf("key file %s has mode %04o: group and others must have no access to it; run chmod 600 %s", path, uint32(p), path)
	}
	return nil
}

// maxKeyFile is far more than a key line needs.
const maxKeyFile = 1024

// WriteKeyFile writes k to a new file at path as `tunbond genkey` prints
// it (base64, one line), readable by its owner alone (0600), as
// ReadKeyFile wants it.
func WriteKeyFile(path string, k Key) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("key file: %w", err)
	}
	_, err = fmt.Fprintln(f, k.Base64())
	return errors.Join(err, f.Close())
}

// ReadKeyFile reads the key in path after checking its mode
// (CheckKeyFileMode) on the file it opened.
func ReadKeyFile(path string) (Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return Key{}, fmt.Errorf("key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Key{}, fmt.Errorf("key file: %w", err)
	}
	if err := CheckKeyFileMode(path, fi.Mode()); err != nil {
		return Key{}, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return Key{}, fmt.Errorf("key file %s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return Key{}, fmt.Errorf("key file %s: longer than %d bytes; it holds one line, as tunbond genkey prints", path, maxKeyFile)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return Key{}, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}
