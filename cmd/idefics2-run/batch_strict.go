package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// decodeBatchLine reads one batch request line into req. Unlike the server, which ignores fields it does not know
// (as OpenAI's clients send extra ones), batch refuses them: a misspelt field in a file ("max_token") would
// otherwise be dropped without a word. The error names the field (a *requestError whose param is the field, code
// "unknown_field"), and text after the object is refused too.
func decodeBatchLine(line []byte, req *chatRequest) error {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(req); err != nil {
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			var id struct {
				ID json.RawMessage `json:"id"`
			}
			if json.Unmarshal(line, &id) == nil {
				req.ID = id.ID
			}
			return &requestError{status: 400, typ: "invalid_request_error", param: strings.Trim(f, `"`), code: "unknown_field",
				msg: fmt.Sprintf("unknown field %s (batch --help lists the fields)", f)}
		}
		return fmt.Errorf("not a JSON request object: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("not a JSON request object: text after the object")
	}
	return nil
}
