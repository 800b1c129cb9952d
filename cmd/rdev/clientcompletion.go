package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// completionCmd prints the script that hooks rdev's completion into a
// shell. The shell then runs rdev itself with COMP_LINE set, and
// kongplete answers from the command line's model (see runWith).
type completionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"Shell: bash, zsh or fish."`
}

func (c *completionCmd) Run(std stdio) error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("completion: find this binary: %w", err)
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return fmt.Errorf("completion: find this binary: %w", err)
	}
	switch c.Shell {
	case "bash":
		fmt.Fprintf(std.out, "complete -C %q rdev\n", bin)
	case "zsh":
		fmt.Fprintf(std.out, "autoload -U +X bashcompinit && bashcompinit\ncomplete -C %q rdev\n", bin)
	case "fish":
		fmt.Fprintf(std.out, `function __complete_rdev
    set -lx COMP_LINE (commandline -cp)
    test -z (commandline -ct)
    and set COMP_LINE "$COMP_LINE "
    %q
end
complete -f -c rdev -a "(__complete_rdev)"
`, bin)
	}
	return nil
}
