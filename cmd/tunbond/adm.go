package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/tunbond/tunbond/endpoints/director"
)

const admUsage = `Usage: tunbond adm [--socket PATH] [ipvsadm arguments]

Drives a running director with ipvsadm's arguments: -L -n [--stats|--rate|-c],
-A/-E/-D (services), -a/-e/-d (real servers), -C, -Z, -S -n, -R < save;
and --bgp: the BGP peers and the VIPs announced (with a bgp section).
With no arguments it lists (-L -n).

Flags:
      --socket string   admin socket of the director (default "` + director.DefaultAdminSocket + `")
`

// runAdm passes ipvsadm's arguments to the running director:
// tunbond adm [--socket PATH] -L -n | -S | -R < save | -A ... | -a ...
func runAdm(args []string) error {
	socket := director.DefaultAdminSocket
	if len(args) >= 2 && args[0] == "--socket" {
		socket, args = args[1], args[2:]
	}
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Print(admUsage)
		return pflag.ErrHelp
	}
	if len(args) == 0 {
		args = []string{"-L", "-n"} // ipvsadm with no arguments lists
	}
	var input string
	for _, a := range args {
		if a == "-R" || a == "--restore" {
			b, err := io.ReadAll(os.Stdin)
			if err != nil {
				return err
			}
			input = string(b)
		}
	}
	out, err := director.AdminCall(socket, args, input)
	fmt.Print(out)
	return err
}
