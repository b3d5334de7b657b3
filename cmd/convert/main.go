// Command convert turns a Hugging Face Idefics2 checkpoint into a GGUF pair (model + mmproj).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "convert: the converter is not built yet in this version")
	os.Exit(1)
}
