package processor

import "fmt"

// MarkerMismatch is the message for a prompt whose <image> markers and images differ in number, with correct
// plurals ("1 <image> marker but 2 images were given").
func MarkerMismatch(markers, images int) string {
	m := fmt.Sprintf("%d %s marker", markers, TokenImage)
	if markers != 1 {
		m += "s"
	}
	verb := "images were"
	if images == 1 {
		verb = "image was"
	}
	return fmt.Sprintf("the prompt has %s but %d %s given", m, images, verb)
}
