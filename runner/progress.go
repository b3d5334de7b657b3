package runner

// ProgressStage names the step of a prompt's evaluation a Progress reports.
type ProgressStage string

// Stages of Progress.
const (
	ProgressImages  ProgressStage = "images"  // image (or crop) features encoded by the vision tower
	ProgressPrefill ProgressStage = "prefill" // prompt tokens evaluated by the decoder
)

// Progress is where the evaluation of a prompt stands: Done of Total units of Stage (sub-images for
// ProgressImages, a sub-image being a whole image or one of its crops; prompt tokens for ProgressPrefill, the
// cached prefix left out). While a sub-image is being encoded, Layer of Layers says how far the vision tower and
// the perceiver are through it (both 0 in the reports between sub-images, and for features taken from the cache).
type Progress struct {
	Stage         ProgressStage
	Done, Total   int
	Layer, Layers int
}

// report calls fn with the stage's progress, if fn is set.
func report(fn func(Progress), stage ProgressStage, done, total int) {
	if fn != nil {
		fn(Progress{Stage: stage, Done: done, Total: total})
	}
}
