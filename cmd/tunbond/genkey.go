package main

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/tunbond/tunbond/tunnel/session"
)

// runGenkey prints a new random key for auth.key_file: one line of base64.
func runGenkey(args []string, out io.Writer) error {
	fs := pflag.NewFlagSet("genkey", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: tunbond genkey > /etc/tunbond/bond.key\n\n"+
			"Prints a new random 32-byte key, base64 on one line, for auth.key_file on both\n"+
			"ends of a bond. Keep the file readable by root only (chmod 600): tunbond refuses\n"+
			"a key file its group or others may read or write.\n")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("genkey takes no arguments (got %q)", fs.Args())
	}
	k, err := session.GenerateKey(nil)
	if err != nil {
		return fmt.Errorf("genkey: %w", err)
	}
	_, err = fmt.Fprintln(out, k.Base64())
	return err
}
