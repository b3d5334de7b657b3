package main

import (
	"bytes"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/idefics2-go/idefics2/internal/cli"
	"github.com/idefics2-go/idefics2/processor"
	"github.com/idefics2-go/idefics2/runner"
)

// pageFiles holds the chat page served at GET /: one HTML file with its styles and script inline, so that it works
// offline and fetches nothing from other hosts.
//
//go:embed page/index.html
var pageFiles embed.FS

// addPageRoutes adds the chat page and the endpoints it calls beside the API routes.
func (s *server) addPageRoutes() {
	s.mux.HandleFunc("GET /{$}", s.handlePage)
	s.mux.HandleFunc("GET /v1/images/settings", s.handleImageSettings)
	s.mux.HandleFunc("/v1/images/settings", methodNotAllowed(http.MethodGet, "/v1/images/settings"))
	s.mux.HandleFunc("POST /v1/images/preview", s.handlePreview)
	s.mux.HandleFunc("/v1/images/preview", methodNotAllowed(http.MethodPost, "/v1/images/preview"))
}

// handlePage serves the chat page. It needs no API key: the page asks for one when the API answers 401.
func (s *server) handlePage(w http.ResponseWriter, r *http.Request) {
	b, err := pageFiles.ReadFile("page/index.html")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// The page loads nothing from elsewhere; say so to the browser.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(b)
}

// imageSettingsJSON is the image processor settings a prompt used or will use, as --json output, batch results and
// the page show them.
type imageSettingsJSON struct {
	ImageSplitting bool `json:"image_splitting"`
	LongestEdge    int  `json:"longest_edge"`
	ShortestEdge   int  `json:"shortest_edge"`
}

func newImageSettingsJSON(c processor.ImageConfig) *imageSettingsJSON {
	return &imageSettingsJSON{ImageSplitting: c.DoImageSplitting, LongestEdge: c.LongestEdge, ShortestEdge: c.ShortestEdge}
}

// handleImageSettings answers GET /v1/images/settings: the model's name, whether it has vision, its image processor
// settings and the server's generation defaults, which the page shows.
func (s *server) handleImageSettings(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	out := map[string]any{"model": s.m.Name(), "vision": s.m.HasVision(), "max_tokens": s.cfg.defaults.MaxTokens,
		"token_limit": s.cfg.tokenLimit, "temperature": s.cfg.defaults.Sampler.Temperature}
	if s.m.HasVision() {
		c := s.m.ImageConfig()
		out["image_splitting"], out["longest_edge"], out["shortest_edge"] = c.DoImageSplitting, c.LongestEdge, c.ShortestEdge
		out["patch_size"], out["image_size"], out["image_seq_len"] = s.m.PatchSize(), s.m.Graph().Vision.ImageSize, s.m.ImageSeqLen()
	}
	writeJSON(w, http.StatusOK, out)
}

// previewRequest is the body of POST /v1/images/preview: images as in a chat request (data: URIs, or local files
// where --allow-local-images allows them) and the request's image settings.
type previewRequest struct {
	Images         []string `json:"images"`
	ImageSplitting *bool    `json:"image_splitting,omitempty"`
	LongestEdge    *int     `json:"longest_edge,omitempty"`
	ShortestEdge   *int     `json:"shortest_edge,omitempty"`
}

// previewSubImage is one (sub-)image of a preview answer.
type previewSubImage struct {
	Label        string `json:"label"`
	Width        int    `json:"width"`
	Height       int    `json:"height"`
	PaddedWidth  int    `json:"padded_width"`
	PaddedHeight int    `json:"padded_height"`
	Cols         int    `json:"cols"`
	Rows         int    `json:"rows"`
	GridCols     int    `json:"grid_cols"`
	GridRows     int    `json:"grid_rows"`
	PNG          string `json:"png"`
}

// previewImage is one input image of a preview answer.
type previewImage struct {
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	SubImages []previewSubImage `json:"sub_images"`
}

// previewResponse is the answer of POST /v1/images/preview.
type previewResponse struct {
	Settings    *imageSettingsJSON `json:"settings"`
	PatchSize   int                `json:"patch_size"`
	ImageTokens int                `json:"image_tokens"`
	Images      []previewImage     `json:"images"`
}

// handlePreview answers POST /v1/images/preview with what the vision tower receives for the images: the resized
// (sub-)images drawn with their padding and patch grid (the preprocessor's own output, as `preprocess --preview`
// writes it).
func (s *server) handlePreview(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	if !s.takeSlot(w) {
		return
	}
	defer func() { <-s.slots }()
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var req previewRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "the body is not a valid preview request: "+err.Error())
		return
	}
	if len(req.Images) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "images: at least one image is required")
		return
	}
	pol := s.cfg.policy
	if pol.maxImages > 0 && len(req.Images) > pol.maxImages {
		writeErr(w, badRequest("images: more than %d images in the request", pol.maxImages))
		return
	}
	set, err := requestImageSettings(req.ImageSplitting, req.LongestEdge, req.ShortestEdge)
	if err != nil {
		writeErr(w, err)
		return
	}
	var imgs []runner.Image
	for i, ref := range req.Images {
		img, err := pol.resolve(ref)
		if err != nil {
			writeErr(w, prefixErr(fmt.Sprintf("images[%d]: ", i), err))
			return
		}
		imgs = append(imgs, img)
	}
	v, err := s.m.ViewImages(imgs, runner.PromptOptions{MaxImagePixels: pol.maxPixels, Image: set})
	if err != nil {
		writeErr(w, err)
		return
	}
	out, err := previewOf(v)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// previewOf draws every (sub-)image of v as a PNG data URI.
func previewOf(v *runner.ImageView) (*previewResponse, error) {
	pngs, err := previewPNGs(v.SubImages, v.Views, v.Patch)
	if err != nil {
		return nil, err
	}
	out := &previewResponse{Settings: newImageSettingsJSON(v.Config), PatchSize: v.Patch, ImageTokens: len(v.SubImages) * v.SeqLen}
	k := 0
	for i, n := range v.PerImage {
		pi := previewImage{Width: v.Originals[i][0], Height: v.Originals[i][1]}
		for range n {
			sv := v.Views[k]
			pi.SubImages = append(pi.SubImages, previewSubImage{Label: sv.Label, Width: sv.W, Height: sv.H, PaddedWidth: sv.PadW,
				PaddedHeight: sv.PadH, Cols: sv.Cols, Rows: sv.Rows, GridCols: sv.GridCols, GridRows: sv.GridRows,
				PNG: "data:image/png;base64," + base64.StdEncoding.EncodeToString(pngs[k])})
			k++
		}
		out.Images = append(out.Images, pi)
	}
	return out, nil
}

// requestImageSettings checks the image settings fields of a request: sizes must be positive (the model's limits
// are checked when the prompt is built).
func requestImageSettings(split *bool, longest, shortest *int) (runner.ImageSettings, error) {
	s := runner.ImageSettings{Splitting: split}
	for _, f := range []struct {
		name string
		v    *int
		dst  *int
	}{{"longest_edge", longest, &s.LongestEdge}, {"shortest_edge", shortest, &s.ShortestEdge}} {
		if f.v == nil {
			continue
		}
		if *f.v <= 0 {
			return s, badRequest("%s %d: want a positive number of pixels", f.name, *f.v)
		}
		*f.dst = *f.v
	}
	return s, nil
}

// corsPolicy answers cross-origin requests from the origins --cors-origins lists ("*": any).
type corsPolicy []string

// parseCORSOrigins reads --cors-origins: a comma-separated list of origins (scheme://host[:port]) or "*".
func parseCORSOrigins(list string) (corsPolicy, error) {
	var out corsPolicy
	for _, o := range strings.Split(list, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if o != "*" && !(strings.HasPrefix(o, "http://") || strings.HasPrefix(o, "https://")) {
			return nil, cli.Usagef("serve: --cors-origins %q: want origins such as https://example.com, or *", o)
		}
		if o != "*" && strings.Count(o, "/") > 2 {
			return nil, cli.Usagef("serve: --cors-origins %q: an origin has no path", o)
		}
		out = append(out, strings.TrimSuffix(o, "/"))
	}
	return out, nil
}

// apply sets the CORS headers for an allowed origin and answers a preflight request; it reports whether the
// request was answered.
func (c corsPolicy) apply(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || len(c) == 0 {
		return false
	}
	if !slices.Contains(c, "*") && !slices.Contains(c, origin) {
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}
