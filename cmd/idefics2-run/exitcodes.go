package main

// Exit codes shared by the commands that run a model and can be stopped by a signal.
const (
	exitLineOK        = "0        success"
	exitLineUsage     = "2        bad usage or bad input (an option, a missing or malformed file, an image that cannot be decoded)"
	exitLineSignalled = "130/143  stopped by SIGINT / SIGTERM, after flushing what was generated"
)

// exitCodes lists, per command (as cli.FlagSet names it), the exit codes its help shows after the options. The
// help/exit-code table test checks every command against this table and its behaviour.
var exitCodes = map[string][]string{
	"idefics2-run": {exitLineOK, "1        run-time failure (a model or context that does not fit the device's memory, a write error)",
		exitLineUsage, exitLineSignalled},
	"chat": {"0        /quit, or the end of the input with every message answered",
		"1        run-time failure loading the model; at the end of the input: a message whose generation failed",
		"2        bad usage or bad input; at the end of the input: a message or command that was refused",
		exitLineSignalled},
	"batch": {"0        every line answered", "1        a line failed (its result is an error object) or a run-time failure",
		exitLineUsage, exitLineSignalled},
	"serve": {"0        stopped by SIGINT / SIGTERM while serving (clean shutdown)",
		"1        run-time failure (loading the model, the listener failing)",
		"2        bad usage or bad input (an option, the model files, an address that cannot be listened on)",
		"130/143  stopped by SIGINT / SIGTERM while loading the model"},
	"bench":      {exitLineOK, "1        run-time failure", exitLineUsage, "130/143  stopped by SIGINT / SIGTERM"},
	"tokenize":   {exitLineOK, "1        a write error", exitLineUsage},
	"detokenize": {exitLineOK, "1        a write error", exitLineUsage},
	"preprocess": {exitLineOK, "1        a write error", exitLineUsage},
	"inspect":    {exitLineOK, "1        a write error", exitLineUsage},
	"info":       {exitLineOK, "1        a write error", "2        bad usage, or a --device that names no device here"},
}
