// Command tunbond bonds uplinks into one link (endpoint), drives a running
// endpoint (ctl), and measures bonding in network namespaces (lab).
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"
)

const usage = `tunbond: bond several uplinks into one link over GRE/IPIP tunnels.

Usage:
  tunbond endpoint --config FILE [flags]   run one end of a bond
  tunbond genkey                           print a new key for auth.key_file
  tunbond ctl [--socket PATH] status       show the paths of a running endpoint
  tunbond ctl [--socket PATH] weight PATH W   change a path's weight live
  tunbond lab bond [flags]                 measure bonding in network namespaces
  tunbond director --config FILE           load-balance VIPs to real servers (IPVS tunnel mode)
  tunbond realserver --config FILE [--check]  serve a director's VIPs on this host
  tunbond adm [ipvsadm arguments]          drive a running director (-L -n, -A, -a, -S, -R ...)
  tunbond version

Run "tunbond COMMAND --help" for a command's flags.
`

var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "endpoint":
		err = runEndpoint(os.Args[2:])
	case "genkey":
		err = runGenkey(os.Args[2:], os.Stdout)
	case "ctl":
		err = runCtl(os.Args[2:])
	case "lab":
		err = runLab(os.Args[2:])
	case "adm":
		err = runAdm(os.Args[2:])
	case "director":
		err = runDirector(os.Args[2:])
	case "realserver":
		err = runRealServer(os.Args[2:])
	case "version":
		fmt.Println("tunbond", version)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "tunbond: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if errors.Is(err, pflag.ErrHelp) {
		return // --help printed the usage
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tunbond:", err)
		os.Exit(1)
	}
}
