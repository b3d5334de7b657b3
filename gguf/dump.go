package gguf

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// DumpOptions controls Dump.
type DumpOptions struct {
	// MaxArray is the number of elements shown per array before "... (N more)"; 0 means 8 and a
	// negative value shows every element.
	MaxArray int
	// NoMetadata omits the key-value section.
	NoMetadata bool
	// NoTensors omits the tensor table.
	NoTensors bool
}

// Dump writes a human-readable description of f, like gguf-dump: a header line, the metadata
// pairs in file order (long arrays abbreviated) and a table of tensors with type, ggml shape,
// element count, data offset and size. The output is deterministic and suitable for golden files.
func Dump(out io.Writer, f *File, opts DumpOptions) error {
	maxArr := opts.MaxArray
	if maxArr == 0 {
		maxArr = 8
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "GGUF v%d, alignment %d, data offset %d, %d key-value pairs, %d tensors\n",
		f.Version, f.Alignment, f.DataOffset, len(f.KV), len(f.Tensors))
	if !opts.NoMetadata {
		fmt.Fprintf(tw, "\nmetadata:\n")
		for i, kv := range f.KV {
			typ := kv.Value.TypeName()
			if a, ok := kv.Value.Data.(Array); ok {
				typ = fmt.Sprintf("%s[%d]", typ, a.Len())
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t= %s\n", i+1, oneLine(kv.Key), typ, kv.Value.Format(maxArr))
		}
	}
	if !opts.NoTensors {
		fmt.Fprintf(tw, "\ntensors:\n")
		fmt.Fprintf(tw, "#\tname\ttype\tshape\telements\toffset\tbytes\n")
		for i, t := range f.Tensors {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\n", i+1, oneLine(t.Name), t.Type, FormatShape(t.Shape), t.NumElements(), t.Offset, t.Size())
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("gguf: dump: %w", err)
	}
	return nil
}

// FormatShape formats a ggml shape as "[ne0, ne1, …]".
func FormatShape(shape []uint64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// oneLine keeps a key or tensor name from a hostile file from breaking the table: values are
// already quoted, names are not.
func oneLine(s string) string {
	return strings.NewReplacer("\n", `\n`, "\t", `\t`, "\r", `\r`, "\v", `\v`, "\f", `\f`).Replace(s)
}
