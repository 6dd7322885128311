package main

import (
	"errors"
	"io"
	"testing"

	"github.com/spf13/pflag"
)

// TestHelpIsNotAnError: `tunbond COMMAND --help` prints the usage and
// ends as asked for (main exits 0 on pflag.ErrHelp), for every command; it
// starts nothing.
func TestHelpIsNotAnError(t *testing.T) {
	for _, tt := range []struct {
		name string
		run  func([]string) error
		args []string
	}{
		{"endpoint", runEndpoint, []string{"--help"}},
		{"ctl", runCtl, []string{"--help"}},
		{"lab bond", runLab, []string{"bond", "--help"}},
		{"lab director", runLab, []string{"director", "--help"}},
		{"adm", runAdm, []string{"--help"}},
		{"director", runDirector, []string{"--help"}},
		{"realserver", runRealServer, []string{"--help"}},
		{"genkey", func(a []string) error { return runGenkey(a, io.Discard) }, []string{"--help"}},
	} {
		if err := tt.run(tt.args); !errors.Is(err, pflag.ErrHelp) {
			t.Errorf("tunbond %s --help: %v, want the usage (pflag.ErrHelp)", tt.name, err)
		}
	}
}
