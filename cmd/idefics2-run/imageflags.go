package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/runner"
)

// imageFlags are the run-time image processor options (--image-splitting, --longest-edge, --shortest-edge).
type imageFlags struct {
	splitting         string
	longest, shortest int
}

func (f *imageFlags) register(fs *cli.FlagSet) {
	fs.String(&f.splitting, "image-splitting", "split each image into 4 crops plus the whole image, `on|off` (default: as the mmproj says)")
	fs.Int(&f.longest, "longest-edge", "resize images so that the longest edge is at most `N` pixels (default: the mmproj's)")
	fs.Int(&f.shortest, "shortest-edge", "resize images so that the shortest edge is at least `N` pixels (default: the mmproj's)")
}

// settings checks the options (noSplit is --no-split) and returns the changes they ask for.
func (f *imageFlags) settings(cmd string, noSplit bool) (runner.ImageSettings, error) {
	var s runner.ImageSettings
	if f.splitting != "" {
		on, err := parseOnOff(f.splitting)
		if err != nil {
			return s, cli.Usagef("%s: --image-splitting %q: %v", cmd, f.splitting, err)
		}
		if on && noSplit {
			return s, cli.Usagef("%s: --image-splitting on and --no-split: give one of them", cmd)
		}
		s.Splitting = &on
	}
	for _, e := range []struct {
		name string
		v    int
		dst  *int
	}{{"--longest-edge", f.longest, &s.LongestEdge}, {"--shortest-edge", f.shortest, &s.ShortestEdge}} {
		if e.v < 0 {
			return s, cli.Usagef("%s: %s %d: want a positive number of pixels", cmd, e.name, e.v)
		}
		*e.dst = e.v
	}
	return s, nil
}

// parseOnOff reads on/off (also true/false, yes/no, 1/0).
func parseOnOff(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "on", "true", "yes", "1":
		return true, nil
	case "off", "false", "no", "0":
		return false, nil
	}
	return false, fmt.Errorf("want on or off")
}

// chatSetHelp lists the settings chat's /set changes.
const chatSetHelp = `/set image-splitting on|off, /set longest-edge N, /set shortest-edge N, /set (shows them)`

// chatSet runs chat's "/set NAME VALUE" (args is what follows /set): it changes the image settings of the following
// turns, checked against the model at once, and prints the settings in use on w. The conversation so far is
// preprocessed again with the new settings at the next turn.
func chatSet(m *runner.Model, cur runner.ImageSettings, args string, w io.Writer) (runner.ImageSettings, error) {
	f := strings.Fields(args)
	next := cur
	switch {
	case len(f) == 0:
	case len(f) != 2:
		return cur, cli.Usagef("chat: /set %s: want /set NAME VALUE (%s)", args, chatSetHelp)
	case f[0] == "image-splitting":
		on, err := parseOnOff(f[1])
		if err != nil {
			return cur, cli.Usagef("chat: /set image-splitting %q: %v", f[1], err)
		}
		next.Splitting = &on
	case f[0] == "longest-edge" || f[0] == "shortest-edge":
		n, err := strconv.Atoi(f[1])
		if err != nil || n <= 0 {
			return cur, cli.Usagef("chat: /set %s %q: want a positive number of pixels", f[0], f[1])
		}
		if f[0] == "longest-edge" {
			next.LongestEdge = n
		} else {
			next.ShortestEdge = n
		}
	default:
		return cur, cli.Usagef("chat: /set %s: unknown setting (%s)", f[0], chatSetHelp)
	}
	c, err := m.ImageConfigWith(next)
	if err != nil {
		return cur, cli.Usagef("chat: /set: %v", strings.TrimPrefix(err.Error(), "runner: "))
	}
	on := "off"
	if c.DoImageSplitting {
		on = "on"
	}
	fmt.Fprintf(w, "(image-splitting %s, longest-edge %d, shortest-edge %d)\n", on, c.LongestEdge, c.ShortestEdge)
	return next, nil
}
