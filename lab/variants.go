package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tunbond/tunbond/tunnel/session"
)

// Transport variants of the tunbond rows (`lab bond --transports`): each
// tunbond scheduler is measured once per variant. A variant is what a user
// chooses in the config and nothing more: every path's transport, and
// whether the bond is authenticated (auth.key_file) or also encrypted
// (auth.encrypt, which needs the key).

// Variant is one transport variant.
type Variant struct {
	Name      string // gre, udp+auth, ...
	Transport string // paths[].transport: gre | udp
	Auth      bool   // auth.key_file set (a fresh key per run)
	Encrypt   bool   // auth.encrypt (implies Auth)
	// L2: mode l2, the flow between the LAN hosts behind the sites' bridges
	// (netns.WithLANs) through the TAPs.
	L2 bool
}

// Variants lists the valid variant names, in the order they are described;
// any of them may end in +l2 (gre+l2, udp+auth+l2).
var Variants = []string{"gre", "udp", "gre+auth", "udp+auth", "gre+encrypt", "udp+encrypt"}

// DefaultVariant is the variant of a run that names none: GRE without auth.
const DefaultVariant = "gre"

// ParseVariant reads a variant name.
func ParseVariant(name string) (Variant, error) {
	base, l2 := strings.CutSuffix(name, "+l2")
	tr, mode, plus := strings.Cut(base, "+")
	v := Variant{Name: name, Transport: tr, L2: l2}
	switch {
	case !plus:
	case mode == "auth":
		v.Auth = true
	case mode == "encrypt":
		v.Auth, v.Encrypt = true, true
	default:
		tr = ""
	}
	if tr != "gre" && tr != "udp" {
		return Variant{}, fmt.Errorf("%q is not a transport variant (valid: %s; each may end in +l2)", name, strings.Join(Variants, ", "))
	}
	return v, nil
}

// ParseVariants reads a comma-separated list of variants ("gre,udp+auth");
// an empty list is the default variant.
func ParseVariants(list string) ([]Variant, error) {
	var out []Variant
	seen := map[string]bool{}
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		v, err := ParseVariant(s)
		if err != nil {
			return nil, err
		}
		if seen[s] {
			return nil, fmt.Errorf("%q is named twice", s)
		}
		seen[s] = true
		out = append(out, v)
	}
	if len(out) == 0 {
		v, _ := ParseVariant(DefaultVariant)
		out = append(out, v)
	}
	return out, nil
}

// writeRunKey writes a fresh key file, as `tunbond genkey` prints it
// (mode 0600), in a new temporary directory; remove deletes both.
func writeRunKey() (path string, remove func(), err error) {
	dir, err := os.MkdirTemp("", "tunbond-lab-key-")
	if err != nil {
		return "", nil, err
	}
	remove = func() { os.RemoveAll(dir) }
	k, err := session.GenerateKey(nil)
	if err == nil {
		path = filepath.Join(dir, "bond.key")
		err = session.WriteKeyFile(path, k)
	}
	if err != nil {
		remove()
		return "", nil, fmt.Errorf("key file: %w", err)
	}
	return path, remove, nil
}
