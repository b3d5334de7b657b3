package main

import (
	"fmt"
	"net/http"
	"strconv"
)

// OpenAI's documented ranges of the chat completion parameters. A request outside them is refused the way OpenAI
// refuses it: status 400, type invalid_request_error, the parameter in param and a code saying which bound it
// crossed (platform.openai.com/docs/api-reference/chat/create).
const (
	openAIMaxTemperature = 2  // temperature: 0 to 2
	openAIMaxTopP        = 1  // top_p: 0 to 1
	openAIMaxPenalty     = 2  // presence_penalty, frequency_penalty: -2 to 2
	openAIMinN           = 1  // n: at least 1
	openAIMaxTopLogprobs = 20 // top_logprobs: 0 to 20
)

// floatRange is one bounded float parameter of a request.
type floatRange struct {
	param    string
	v        *float64
	min, max float64
}

// checkOpenAIRanges refuses parameters outside OpenAI's ranges, naming the first one in param. Extension fields
// (top_k, min_p, repetition_penalty) are left to the sampler's own checks.
func (r *chatRequest) checkOpenAIRanges() error {
	for _, f := range []floatRange{
		{"temperature", r.Temperature, 0, openAIMaxTemperature},
		{"top_p", r.TopP, 0, openAIMaxTopP},
		{"presence_penalty", r.PresencePenalty, -openAIMaxPenalty, openAIMaxPenalty},
		{"frequency_penalty", r.FrequencyPenalty, -openAIMaxPenalty, openAIMaxPenalty},
	} {
		if f.v == nil {
			continue
		}
		switch {
		case *f.v < f.min:
			return rangeError(f.param, "decimal_below_min_value", "decimal below minimum value", ">=", fmtNum(f.min), fmtNum(*f.v))
		case *f.v > f.max:
			return rangeError(f.param, "decimal_above_max_value", "decimal above maximum value", "<=", fmtNum(f.max), fmtNum(*f.v))
		}
	}
	if r.N != nil && *r.N < openAIMinN {
		return rangeError("n", "integer_below_min_value", "integer below minimum value", ">=", strconv.Itoa(openAIMinN), strconv.Itoa(*r.N))
	}
	return nil
}

// rangeError is OpenAI's message for a number out of range: "Invalid 'temperature': decimal above maximum value.
// Expected a value <= 2, but got 3 instead."
func rangeError(param, code, what, op, bound, got string) error {
	return &requestError{status: http.StatusBadRequest, typ: "invalid_request_error", param: param, code: code,
		msg: fmt.Sprintf("Invalid '%s': %s. Expected a value %s %s, but got %s instead.", param, what, op, bound, got)}
}

func fmtNum(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// handleModel answers GET /v1/models/{id}: the served model when id is its name (general.name), else 404 with
// OpenAI's model_not_found error.
func (s *server) handleModel(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	id := r.PathValue("id")
	if id != s.m.Name() {
		writeAPIError(w, http.StatusNotFound, &apiError{Type: "invalid_request_error", Param: strPtr("model"), Code: strPtr("model_not_found"),
			Message: fmt.Sprintf("The model '%s' does not exist (this server serves %q)", id, s.m.Name())})
		return
	}
	writeJSON(w, http.StatusOK, s.modelObject())
}

// modelObject is the served model as OpenAI's model object; its id is the model's name from its metadata.
func (s *server) modelObject() map[string]any {
	return map[string]any{"id": s.m.Name(), "object": "model", "created": s.created, "owned_by": "idefics2-go"}
}

// writeAPIError writes {"error": e} with status.
func writeAPIError(w http.ResponseWriter, status int, e *apiError) {
	writeJSON(w, status, map[string]any{"error": e})
}

func strPtr(s string) *string { return &s }

// optPtr is nil for "" and a pointer to s otherwise: OpenAI's error objects carry param and code as null when they
// do not apply.
func optPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// withNullUsage adds "usage": null to a marshalled chunk object: with stream_options.include_usage OpenAI sends the
// field in every chunk, null in all but the last.
func withNullUsage(b []byte) []byte {
	if len(b) < 2 || b[len(b)-1] != '}' {
		return b
	}
	return append(b[:len(b)-1:len(b)-1], []byte(`,"usage":null}`)...)
}
