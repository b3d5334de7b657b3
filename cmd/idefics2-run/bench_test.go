package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestBenchCommand(t *testing.T) {
	model, mm := pair(t, "p1")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"bench", "-m", model, "--mmproj", mm, "-p", "8", "-n", "4", "-r", "2",
		"-t", "1", "--images", "56", "--perceiver", "--ttft", "--json"}, nil, &out, &errb)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var res []map[string]any
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out.String())
	}
	want := []string{"pp8", "tg4", "image 56x56", "perceiver", "ttft"}
	if len(res) != len(want) {
		t.Fatalf("%d results, want %d: %s", len(res), len(want), out.String())
	}
	for i, w := range want {
		name, _ := res[i]["test"].(string)
		if !strings.HasPrefix(name, w) {
			t.Errorf("result %d is %q, want %q", i, name, w)
		}
		for _, k := range []string{"avg_ts", "stddev_ts", "samples_ts", "n_threads", "n_prompt", "n_gen", "avg_ns"} {
			if _, ok := res[i][k]; !ok {
				t.Errorf("result %d lacks llama-bench field %q", i, k)
			}
		}
		if ts, _ := res[i]["avg_ts"].(float64); ts <= 0 {
			t.Errorf("result %d: avg_ts %v", i, res[i]["avg_ts"])
		}
	}
	if res[0]["n_prompt"].(float64) != 8 || res[1]["n_gen"].(float64) != 4 {
		t.Errorf("n_prompt/n_gen not set: %v %v", res[0]["n_prompt"], res[1]["n_gen"])
	}
	// Generation carries the memory's bound (read limit, on by default); other tests do not.
	for i, r := range res {
		_, has := r["limit_ts"]
		if has != (i == 1) {
			t.Errorf("result %d (%v): limit_ts present %v", i, r["test"], has)
		}
	}
	tg := res[1]
	samples, _ := tg["samples_limit_ts"].([]any)
	step, _ := tg["step_bytes"].(float64)
	read, _ := tg["read_bytes"].(float64)
	if lim, _ := tg["limit_ts"].(float64); lim <= 0 || len(samples) != 2 || step <= 0 || read < step {
		t.Errorf("tg read limit: limit_ts %v, samples %v, step_bytes %v, read_bytes %v", tg["limit_ts"], samples, tg["step_bytes"], tg["read_bytes"])
	}
	// rate / limit in percent, from the same repetitions.
	if pct, _ := tg["pct_limit"].(float64); pct <= 0 {
		t.Errorf("tg pct_limit %v", tg["pct_limit"])
	}

	// Markdown carries it in its own column, and --read-limit=false drops it.
	for _, c := range []struct {
		flag string
		want bool
	}{{"--read-limit=true", true}, {"--read-limit=false", false}} {
		out.Reset()
		errb.Reset()
		code := run(context.Background(), []string{"bench", "-m", model, "-p", "0", "-n", "2", "-r", "1", "-t", "1", c.flag}, nil, &out, &errb)
		if code != exitOK {
			t.Fatalf("%s: exit %d: %s", c.flag, code, errb.String())
		}
		if got := strings.Contains(out.String(), "GB/s); rate"); got != c.want {
			t.Errorf("%s: read limit in the table %v, want %v:\n%s", c.flag, got, c.want, out.String())
		}
	}
}

func TestBenchBadFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"bench"}, "-m/--model"},
		{[]string{"bench", "-m", "x.gguf", "-p", "abc"}, "-p"},
		{[]string{"bench", "-m", "x.gguf", "-t", "0"}, "-t"},
		{[]string{"bench", "-m", "x.gguf", "-r", "0"}, "-r"},
		{[]string{"bench", "-m", "x.gguf", "-o", "csv"}, "-o"},
		{[]string{"bench", "-m", "/nonexistent/x.gguf", "-p", "8", "-n", "0"}, "x.gguf"},
		{[]string{"bench", "-m", "x.gguf", "-t", ""}, "-t"},
		{[]string{"bench", "-m", "x.gguf", "-t", "100000"}, "-t"},
		{[]string{"bench", "-m", "x.gguf", "--images", "7"}, "--images"},
		{[]string{"bench", "-m", "x.gguf", "--device", "tpu"}, `--device "tpu"`},
		{[]string{"bench", "-m", "x.gguf", "--warmup=maybe"}, "--warmup"},
		{[]string{"bench", "-m", "x.gguf", "extra"}, `"extra"`},
		{[]string{"bench", "-m", "x.gguf", "--x16", "--ggml-repack"}, "--ggml-repack and --x16"},
		{[]string{"bench", "-m", "x.gguf", "--no-repack", "--ggml-repack"}, "--no-repack and --ggml-repack"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := run(context.Background(), c.args, nil, &out, &errb)
		if code != exitUsage || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 naming %q", c.args, code, errb.String(), c.want)
		}
	}
}

func TestBenchConstrained(t *testing.T) {
	model, _ := pair(t, "demo")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"bench", "-m", model, "-p", "0", "-n", "24", "-r", "2", "-t", "1",
		"--constrained", "--json"}, nil, &out, &errb)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var res []map[string]any
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out.String())
	}
	if len(res) != 2 || res[0]["test"] != "tg24" || res[1]["test"] != "tg24 constrained (json-schema)" {
		t.Fatalf("results %s", out.String())
	}
	if us, _ := res[1]["mask_us"].(float64); us <= 0 {
		t.Errorf("mask_us %v, want > 0", res[1]["mask_us"])
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--json-schema", "{}"}, "--json-schema needs --constrained"},
		{[]string{"--constrained", "--json-schema", `{"pattern":"a"}`}, `keyword "pattern"`},
		{[]string{"--constrained", "-n", "0"}, "needs a generation test"},
	} {
		var o, e bytes.Buffer
		code := run(context.Background(), append([]string{"bench", "-m", model, "-p", "0", "-r", "1"}, tc.args...), nil, &o, &e)
		if code != exitUsage || !strings.Contains(e.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, e.String(), exitUsage, tc.want)
		}
	}
}

// TestBenchParallel runs the batched test and the mixed test on the demo model: one result per level with
// llama-batched-bench's fields and consistent figures, then the mixed test's figures; and its flag errors.
func TestBenchParallel(t *testing.T) {
	mixedWindow = 300 * time.Millisecond
	model, mm := pair(t, "demo")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"bench", "-m", model, "--mmproj", mm, "-p", "16", "-n", "4", "-t", "1",
		"--parallel", "1,2,3", "--mixed", "60", "--json"}, nil, &out, &errb)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var res []map[string]any
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || len(res) != 4 {
		t.Fatalf("%v: %s", err, out.String())
	}
	for i, pl := range []float64{1, 2, 3} {
		r := res[i]
		for _, k := range []string{"pp", "tg", "pl", "n_kv", "t_pp", "speed_pp", "t_tg", "speed_tg", "t", "speed"} {
			if v, ok := r[k].(float64); !ok || v <= 0 {
				t.Errorf("level %v: %s = %v", pl, k, r[k])
			}
		}
		if r["pl"] != pl || r["n_kv"] != pl*20 {
			t.Errorf("level %v: pl %v, n_kv %v", pl, r["pl"], r["n_kv"])
		}
	}
	m := res[3]
	for _, k := range []string{"stream_tps_solo", "stream_tps_encode", "encode_s_solo", "encode_s_streams"} {
		if v, ok := m[k].(float64); !ok || v <= 0 {
			t.Errorf("mixed: %s = %v", k, m[k])
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--parallel", "1,2", "-p", "8,16"}, "one prompt size"},
		{[]string{"--parallel", "0"}, "--parallel"},
		{[]string{"--mixed", "980"}, "add --parallel"},
		{[]string{"--parallel", "2", "--images", "56"}, "--images is not part"},
	} {
		var o, e bytes.Buffer
		code := run(context.Background(), append([]string{"bench", "-m", model}, tc.args...), nil, &o, &e)
		if code != exitUsage || !strings.Contains(e.String(), tc.want) {
			t.Errorf("%v: exit %d: %s", tc.args, code, e.String())
		}
	}
}
