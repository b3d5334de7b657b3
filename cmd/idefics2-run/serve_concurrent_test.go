package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// answer is what a client reads from one chat completion: the text, the finish reason and the usage, whether the
// answer was streamed or not.
type answer struct {
	status int
	text   string
	finish string
	usage  tokenUsage
}

// ask posts one chat request and reads its answer to the end. It returns an error (rather than failing the test)
// so that client goroutines can use it: a non-200 status is not an error, a malformed or cut answer is.
func ask(url, body string) (answer, error) {
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	return readAnswer(resp)
}

// readAnswer reads a chat completion response: JSON, or with Content-Type text/event-stream the SSE chunks, which
// must end with data: [DONE] after a finish reason (a stream cut short is an error).
func readAnswer(resp *http.Response) (answer, error) {
	a := answer{status: resp.StatusCode}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return a, nil
	}
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		var r chatResponse
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return a, fmt.Errorf("decoding the answer: %w", err)
		}
		if len(r.Choices) != 1 || r.Choices[0].Message == nil || r.Choices[0].Message.Content == nil ||
			r.Choices[0].FinishReason == nil || r.Usage == nil {
			return a, fmt.Errorf("incomplete answer %+v", r)
		}
		a.text, a.finish, a.usage = *r.Choices[0].Message.Content, *r.Choices[0].FinishReason, *r.Usage
		return a, nil
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			if a.finish == "" {
				return a, errors.New("the stream ended without a finish reason")
			}
			return a, nil
		}
		var c chatResponse
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return a, fmt.Errorf("chunk %q: %w", data, err)
		}
		if c.Error != nil {
			return a, fmt.Errorf("error chunk after %q: %s", a.text, c.Error.Message)
		}
		for _, ch := range c.Choices {
			if ch.Delta != nil && ch.Delta.Content != nil {
				a.text += *ch.Delta.Content
			}
			if ch.FinishReason != nil {
				a.finish = *ch.FinishReason
			}
		}
		if c.Usage != nil {
			a.usage = *c.Usage
		}
	}
	return a, fmt.Errorf("the stream was cut after %q (no data: [DONE]): %v", a.text, sc.Err())
}

// TestServerConcurrentClients: 16 clients at once get, each, the answer the server gives the same request alone —
// greedy and seeded sampling, streamed and not, over different images and questions.
func TestServerConcurrentClients(t *testing.T) {
	const clients = 16
	_, url := startServer(t, "demo", func(c *serverConfig) { c.queue = clients })
	questions := []string{question, "What color is the shape?", "Describe the picture."}
	bodies := make([]string, clients)
	for i := range bodies {
		sampling := `,"temperature":0`
		if i%4 == 3 {
			sampling = fmt.Sprintf(`,"temperature":0.9,"seed":%d`, 100+i)
		}
		bodies[i] = chatBody(t, demoPNG(fmt.Sprintf("demo_%02d.png", i%10)), questions[i%len(questions)],
			fmt.Sprintf(`,"max_tokens":24,"stream":%v%s`, i%2 == 1, sampling))
	}
	alone := make([]answer, clients)
	for i, b := range bodies {
		a, err := ask(url, b)
		if err != nil || a.status != 200 {
			t.Fatalf("request %d alone: status %d, %v", i, a.status, err)
		}
		alone[i] = a
	}
	together := make([]answer, clients)
	errs := make([]error, clients)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			together[i], errs[i] = ask(url, bodies[i])
		}()
	}
	close(start)
	wg.Wait()
	for i := range bodies {
		if errs[i] != nil {
			t.Errorf("request %d: %v", i, errs[i])
			continue
		}
		// Cached prompt tokens depend on what ran before; the answer must not.
		got, want := together[i], alone[i]
		if got.text != want.text || got.finish != want.finish || got.usage.PromptTokens != want.usage.PromptTokens ||
			got.usage.CompletionTokens != want.usage.CompletionTokens {
			t.Errorf("request %d with %d clients: %+v, alone: %+v", i, clients, got, want)
		}
	}
}
