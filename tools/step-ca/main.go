// Command step-ca runs smallstep's certificate authority (step-ca) for the frontdoor.pki tests.
//
// Debian ships the step-ca library sources (golang-github-smallstep-certificates-dev) but not
// its cmd/step-ca, so this is our own small main around commands.AppCommand: the same flags
// (<config> [--password-file ...]) and behaviour as upstream's binary. The CA back end
// (softcas) and key manager (softkms) register themselves in init(), so they are imported for
// their side effects only; without them the CA refuses to start ("unsupported kms type").
//
// Built by scripts/build-step-ca.sh in GOPATH mode against /usr/share/gocode only.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/commands"
	"github.com/urfave/cli"
	"go.step.sm/cli-utils/step"

	// Registered by side effect: the in-process CA and the file-based key manager.
	_ "github.com/smallstep/certificates/cas/softcas"
	_ "github.com/smallstep/certificates/kms/softkms"
)

// version is the library version Debian packages (golang-github-smallstep-certificates-dev).
// It can be overridden with -ldflags "-X main.version=...".
var version = "0.19.0"

func main() {
	step.Set("Smallstep CA", version, "N/A")
	authority.GlobalVersion.Version = version

	app := cli.NewApp()
	app.Name = "step-ca"
	app.HelpName = "step-ca"
	app.Version = step.Version()
	app.Usage = "an online certificate authority (smallstep step-ca, built for frontdoor.pki tests)"
	app.UsageText = commands.AppCommand.UsageText
	app.Flags = append(app.Flags, commands.AppCommand.Flags...)
	app.Flags = append(app.Flags, cli.HelpFlag)
	app.Writer = os.Stdout
	app.ErrWriter = os.Stderr
	app.Action = func(_ *cli.Context) error {
		// Run the top-level action as the "start" command, as upstream's main does: an empty
		// flag set leaves all of os.Args positional, and Command.Run parses Args().Tail()
		// (everything after the program name) with the command's own flags.
		set := flag.NewFlagSet(app.Name, flag.ContinueOnError)
		if err := set.Parse(os.Args); err != nil {
			return err
		}
		ctx := cli.NewContext(app, set, nil)
		return commands.AppCommand.Run(ctx)
	}

	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
