package cli

import (
	"fmt"
	"io"
	"sort"
)

// Name returns the name messages call the command by ("chat").
func (fs *FlagSet) Name() string { return fs.name }

// Exits sets the exit codes the help lists after the options, one "CODE  meaning" line each ("0  success").
func (fs *FlagSet) Exits(lines ...string) { fs.exits = lines }

// writeExits writes the exit code section of the help, if any.
func (fs *FlagSet) writeExits(w io.Writer) {
	if len(fs.exits) == 0 {
		return
	}
	fmt.Fprint(w, "\nexit codes:\n")
	for _, l := range fs.exits {
		fmt.Fprintf(w, "  %s\n", l)
	}
}

// nearest returns the registered option name closest to name (an unknown option without dashes) when it is close
// enough to be a typo: at most two edits away, and fewer edits than half its length, so that a short unrelated
// name suggests nothing. Ties go to the name that sorts first.
func (fs *FlagSet) nearest(name string) string {
	names := make([]string, 0, len(fs.byName)+1)
	for n := range fs.byName {
		names = append(names, n)
	}
	names = append(names, "help")
	sort.Strings(names)
	best, bestD := "", 3
	for _, n := range names {
		d := editDistance(name, n)
		if d < bestD && 2*d < max(len(n), len(name)) {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b in bytes (option names are ASCII):
// insertions, deletions, substitutions and swaps of two neighbours ("hepl" for "help") each count one.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
