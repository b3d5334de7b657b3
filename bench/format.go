package bench

import (
	"fmt"
	"io"
	"strings"
)

// WriteMarkdownHeader prints the table header of WriteMarkdownRow.
func WriteMarkdownHeader(w io.Writer) {
	fmt.Fprintln(w, "| model | size | params | backend | threads | test | rate | read limit | peak RSS |")
	fmt.Fprintln(w, "| --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |")
}

// WriteMarkdownRow prints one result as a llama-bench-style markdown row.
func WriteMarkdownRow(w io.Writer, r Result) {
	backend := r.Backend
	if r.Variant != "" {
		backend += " (" + r.Variant + ")"
	}
	if r.FlashAttn {
		backend += ", fa"
	}
	rate := fmt.Sprintf("%.2f ± %.2f %s", r.AvgTs, r.StddevTs, r.Unit)
	if r.Unit == "images/s" || r.Unit == "1/s" {
		rate = fmt.Sprintf("%.2f ± %.2f s", float64(r.AvgNs)/1e9, float64(r.StddevNs)/1e9)
	}
	limit := "—"
	if r.LimitTs > 0 {
		limit = fmt.Sprintf("%.2f t/s (%.1f GB/s); rate %.0f%%", r.LimitTs, r.ReadGBs, r.PctLimit)
	}
	test := r.Test
	if r.MaskUs > 0 {
		test += fmt.Sprintf("; mask %.0f µs/token", r.MaskUs)
	}
	fmt.Fprintf(w, "| %s | %s | %s | %s | %d | %s | %s | %s | %s |\n", strings.TrimSpace(r.ModelType), gib(r.ModelSize),
		params(r.NParams), backend, r.NThreads, test, rate, limit, gib(r.PeakRSS))
}

func gib(b int64) string { return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30)) }

func params(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f B", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2f M", float64(n)/1e6)
	}
	return fmt.Sprint(n)
}
