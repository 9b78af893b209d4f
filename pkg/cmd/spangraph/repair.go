package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/spangraph/spangraph/pkg/config"
	"github.com/spangraph/spangraph/pkg/store"
)

// runRepair moves the damaged parts of one tenant's store aside, so that a
// quarantined tenant opens again with what is left.
func runRepair(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("repair", flag.ContinueOnError)
	tenant := fs.String("tenant", "", "the tenant to repair (required)")
	dataDir := fs.String("data-dir", "", "data_dir of the server (default: the config file's, else "+config.Default().DataDir+")")
	cfgFile := fs.String("config", "", "YAML config file of the server, for its data_dir")
	whole := fs.Bool("whole", false, "move the tenant's whole store aside (it starts empty), when moving the damaged parts was not enough")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: spangraph repair --tenant ID [--data-dir DIR] [--whole]

Moves the parts of a tenant's store that stop it from opening (a stray WAL
segment, a block whose index or meta.json is damaged, a file where a
directory belongs) into <data_dir>/%s/<tenant>-<time>/, keeping them for
inspection, then checks that the store opens. The blocks that are fine
stay. Run it while the server has the tenant quarantined (its other
tenants keep running; the tenant reopens on its next span or query), or
with the server stopped.

`, store.QuarantineDir)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *tenant == "" {
		fs.Usage()
		return errors.New("repair: --tenant is required")
	}
	dir := config.Default().DataDir
	if *cfgFile != "" {
		c := config.Default()
		if err := c.LoadFile(*cfgFile); err != nil {
			return err
		}
		dir = c.DataDir
	}
	if *dataDir != "" {
		dir = *dataDir
	}
	res, err := store.Repair(dir, *tenant, *whole, time.Now())
	for _, d := range res.Moved {
		fmt.Fprintf(out, "moved %s: %s\n", d.String(), res.To)
	}
	if err != nil {
		return err
	}
	if len(res.Moved) == 0 {
		fmt.Fprintf(out, "tenant %q: nothing damaged found, nothing moved; ", *tenant)
	} else {
		fmt.Fprintf(out, "tenant %q: %d part(s) kept in %s for inspection; ", *tenant, len(res.Moved), res.To)
	}
	fmt.Fprintf(out, "the store opens with %d block(s) and %d series in memory\n", res.Blocks, res.Series)
	return nil
}
