package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// loraConfig is the part of adapter_config.json that decides the weights.
type loraConfig struct {
	rank          int
	alpha         float64
	rsLoRA        bool
	targets       moduleSet // target_modules
	excluded      moduleSet // exclude_modules (empty when absent)
	layers        []int     // layers_to_transform; nil: every layer
	rankPattern   []patternEntry
	alphaPattern  []patternEntry
	modulesToSave []string
	patternKeys   []string // rank_pattern keys then alpha_pattern keys, PEFT's lookup order
	patternRegex  []*regexp.Regexp
}

// patternEntry is one rank_pattern or alpha_pattern entry.
type patternEntry struct {
	key   string
	value float64
}

// isAdapterFolder reports whether dir holds adapter_config.json.
func isAdapterFolder(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, adapterConfigFile))
	return err == nil
}

// openAdapterConfig reads and checks adapter_config.json. Settings that change the weights in
// a way this converter does not reproduce are refused by name.
func openAdapterConfig(dir string) (*loraConfig, error) {
	data, err := readFileLimited(filepath.Join(dir, adapterConfigFile), maxJSONSize)
	ok := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, inputErrorf("convert: %s: %v", filepath.Join(dir, adapterConfigFile), err)
	}
	if !ok {
		if _, err := os.Stat(filepath.Join(dir, configFile)); err == nil {
			return nil, inputErrorf("convert: %s: no %s: this is a model checkpoint, not a PEFT adapter folder", dir, adapterConfigFile)
		}
		return nil, inputErrorf("convert: %s: %s is missing: not a PEFT adapter folder", dir, adapterConfigFile)
	}
	o, err := parseJSONObject(filepath.Join(filepath.Base(dir), adapterConfigFile), quotePythonNonFinite(data))
	if err != nil {
		return nil, err
	}
	peftType, err := required[string](o, "peft_type")
	if err != nil {
		return nil, err
	}
	if peftType != "LORA" {
		return nil, o.errorf("peft_type", "%q is not supported (only LORA)", peftType)
	}
	// LoraConfig defaults: r=8, lora_alpha=8, bias="none", use_rslora=False, use_dora=False.
	c := &loraConfig{}
	if c.rank, err = withDefault(o, "r", 8); err != nil {
		return nil, err
	}
	if c.rank <= 0 || c.rank > maxAdapterRank {
		return nil, o.errorf("r", "%d is not a rank (want 1..%d)", c.rank, maxAdapterRank)
	}
	if c.alpha, err = adapterAlpha(o, "lora_alpha", 8); err != nil {
		return nil, err
	}
	if c.rsLoRA, err = withDefault(o, "use_rslora", false); err != nil {
		return nil, err
	}
	if dora, err := withDefault(o, "use_dora", false); err != nil {
		return nil, err
	} else if dora {
		return nil, o.errorf("use_dora", "DoRA adapters are not supported (merge them with PEFT's merge_and_unload and convert the merged checkpoint)")
	}
	if bias, err := withDefault(o, "bias", "none"); err != nil {
		return nil, err
	} else if bias != "none" {
		return nil, o.errorf("bias", "%q is not supported (only \"none\": trained biases need the adapter's bias tensors merged by PEFT)", bias)
	}
	if lb, err := withDefault(o, "lora_bias", false); err != nil {
		return nil, err
	} else if lb {
		return nil, o.errorf("lora_bias", "true is not supported (lora_B biases)")
	}
	if init, ok := o.m["init_lora_weights"]; ok && strings.Contains(string(init), "loftq") {
		return nil, o.errorf("init_lora_weights", "LoftQ adapters are not supported (LoftQ changes the base weights the adapter was trained on)")
	}
	if o.has("layer_replication") {
		return nil, o.errorf("layer_replication", "is not supported (the adapted model has other layers than its base)")
	}
	// fan_in_fan_out describes Conv1D weights stored [in, out]; every adapted layer of
	// Idefics2 is an nn.Linear, for which PEFT itself sets fan_in_fan_out to False when it builds
	// the LoRA layer, so ΔW = s·B·A in (out, in) order either way.
	if _, err := withDefault(o, "fan_in_fan_out", false); err != nil {
		return nil, err
	}
	if err := c.readTargets(o); err != nil {
		return nil, err
	}
	if c.rankPattern, err = readPattern(o, "rank_pattern", true); err != nil {
		return nil, err
	}
	if c.alphaPattern, err = readPattern(o, "alpha_pattern", false); err != nil {
		return nil, err
	}
	for _, p := range append(slices.Clone(c.rankPattern), c.alphaPattern...) {
		// PEFT 0.12 matches a pattern key k against the module name with re.match(".*\.k$");
		// later versions also accept the whole name ("(.*\.)?k$"), which this covers.
		re, err := regexp.Compile(`^(?:.*\.)?(?:` + p.key + `)$`)
		if err != nil {
			return nil, inputErrorf("convert: %s: pattern key %q is not a regular expression this converter reads: %v", o.file, p.key, err)
		}
		c.patternKeys = append(c.patternKeys, p.key)
		c.patternRegex = append(c.patternRegex, re)
	}
	if o.has("modules_to_save") {
		if c.modulesToSave, err = required[[]string](o, "modules_to_save"); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// pythonNonFinite are the tokens Python's json module writes for non-finite floats.
var pythonNonFinite = []string{"NaN", "-Infinity", "Infinity"}

// quotePythonNonFinite turns the bare NaN, Infinity and -Infinity tokens Python's json.dump
// writes (outside strings) into strings, so that the file parses and the field holding one is
// reported by name.
func quotePythonNonFinite(data []byte) []byte {
	var out []byte
	inString, escaped := false, false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inString {
			out = append(out, c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		if c == '"' {
			inString = true
			out = append(out, c)
			continue
		}
		matched := false
		for _, tok := range pythonNonFinite {
			if bytes.HasPrefix(data[i:], []byte(tok)) {
				out = append(out, '"')
				out = append(out, tok...)
				out = append(out, '"')
				i += len(tok) - 1
				matched = true
				break
			}
		}
		if !matched {
			out = append(out, c)
		}
	}
	return out
}

// floatField reads a number that may have been written by Python as NaN or ±Infinity.
func floatField(o *jsonObject, key string, def float64) (float64, error) {
	var s string
	if json.Unmarshal(o.m[key], &s) == nil && slices.Contains(pythonNonFinite, s) {
		return 0, o.errorf(key, "%s is not a finite number", s)
	}
	return withDefault(o, key, def)
}

// adapterAlpha reads a lora_alpha value that must be finite and not zero.
func adapterAlpha(o *jsonObject, key string, def float64) (float64, error) {
	v, err := floatField(o, key, def)
	if err != nil {
		return 0, err
	}
	return checkAlpha(o, key, v)
}

func checkAlpha(o *jsonObject, key string, v float64) (float64, error) {
	if math.IsNaN(v) || math.IsInf(v, 0) || v == 0 {
		return 0, o.errorf(key, "%v is not a finite non-zero alpha", v)
	}
	return v, nil
}

// moduleSet is a PEFT module selection (target_modules, exclude_modules): a list of names, each matching a module
// whose name equals it or ends with "." + it; one regular expression matched against the whole name; or
// "all-linear", every linear layer but the output projection.
type moduleSet struct {
	regex     *regexp.Regexp
	list      []string
	allLinear bool
}

// PEFT's INCLUDE_LINEAR_LAYERS_SHORTHAND.
const allLinear = "all-linear"

// readModuleSet reads key as a moduleSet; absent or null gives an empty set unless required.
func readModuleSet(o *jsonObject, key string, need bool) (moduleSet, error) {
	if !o.has(key) {
		if need {
			return moduleSet{}, o.errorf(key, "missing")
		}
		return moduleSet{}, nil
	}
	raw := strings.TrimSpace(string(o.m[key]))
	if strings.HasPrefix(raw, "\"") {
		s, err := required[string](o, key)
		if err != nil {
			return moduleSet{}, err
		}
		if s == allLinear {
			return moduleSet{allLinear: true}, nil
		}
		// PEFT: re.fullmatch(pattern, module_name).
		re, err := regexp.Compile(`^(?:` + s + `)$`)
		if err != nil {
			return moduleSet{}, o.errorf(key, "%q is not a regular expression this converter reads: %v", truncate(s, 60), err)
		}
		return moduleSet{regex: re}, nil
	}
	list, err := required[[]string](o, key)
	if err != nil {
		return moduleSet{}, err
	}
	if len(list) == 0 && need {
		return moduleSet{}, o.errorf(key, "empty list")
	}
	return moduleSet{list: list}, nil
}

// has reports whether the set selects module.
func (m moduleSet) has(module string) bool {
	switch {
	case m.allLinear:
		return module != strings.TrimSuffix(lmHeadName, ".weight")
	case m.regex != nil:
		return m.regex.MatchString(module)
	}
	return slices.ContainsFunc(m.list, func(k string) bool { return suffixMatch(module, k) })
}

// readTargets reads target_modules, exclude_modules and layers_to_transform.
func (c *loraConfig) readTargets(o *jsonObject) error {
	var err error
	if c.targets, err = readModuleSet(o, "target_modules", true); err != nil {
		return err
	}
	if c.excluded, err = readModuleSet(o, "exclude_modules", false); err != nil {
		return err
	}
	if o.has("layers_to_transform") {
		raw := strings.TrimSpace(string(o.m["layers_to_transform"]))
		if strings.HasPrefix(raw, "[") {
			c.layers, err = required[[]int](o, "layers_to_transform")
		} else {
			var one int
			one, err = required[int](o, "layers_to_transform")
			c.layers = []int{one}
		}
		if err != nil {
			return err
		}
		if c.layers == nil {
			c.layers = []int{}
		}
	}
	return nil
}

// layerIndex is the index of a module's layer (".layers.N." in its name); ok is false outside layers.
var layerIndex = regexp.MustCompile(`\.layers\.([0-9]+)\.`)

// readPattern reads rank_pattern or alpha_pattern, keeping the file's key order (PEFT takes the
// first key that matches).
func readPattern(o *jsonObject, key string, integer bool) ([]patternEntry, error) {
	sub, ok, err := o.object(key)
	if err != nil || !ok {
		return nil, err
	}
	keys, err := orderedKeys(o.m[key])
	if err != nil {
		return nil, o.errorf(key, "%v", err)
	}
	var out []patternEntry
	for _, k := range keys {
		if integer {
			v, err := required[int](sub, k)
			if err != nil {
				return nil, err
			}
			if v <= 0 || v > maxAdapterRank {
				return nil, sub.errorf(k, "%d is not a rank (want 1..%d)", v, maxAdapterRank)
			}
			out = append(out, patternEntry{key: k, value: float64(v)})
			continue
		}
		v, err := floatField(sub, k, math.NaN())
		if err != nil {
			return nil, err
		}
		if _, err := checkAlpha(sub, k, v); err != nil {
			return nil, err
		}
		out = append(out, patternEntry{key: k, value: v})
	}
	return out, nil
}

// orderedKeys returns the keys of a JSON object in file order.
func orderedKeys(raw json.RawMessage) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, ok := t.(string)
		if !ok {
			return nil, errors.New("not a JSON object")
		}
		keys = append(keys, k)
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// targets reports whether target_modules selects the module.
func (c *loraConfig) targetsModule(module string) bool {
	if !c.targets.has(module) || c.excluded.has(module) {
		return false
	}
	if c.layers != nil {
		// PEFT applies layers_to_transform to modules inside a layer stack only.
		if sub := layerIndex.FindStringSubmatch(module); sub != nil {
			n, err := strconv.Atoi(sub[1])
			return err == nil && slices.Contains(c.layers, n)
		}
	}
	return true
}

// saves reports whether modules_to_save names the module (PEFT: the name equals an entry or
// ends with "." + entry).
func (c *loraConfig) saves(module string) bool {
	return slices.ContainsFunc(c.modulesToSave, func(k string) bool { return suffixMatch(module, k) })
}

func suffixMatch(module, key string) bool {
	return module == key || strings.HasSuffix(module, "."+key)
}

// moduleRankAlpha returns the module's r and lora_alpha: PEFT takes the first rank_pattern or
// alpha_pattern key that matches the module and looks it up in both.
func (c *loraConfig) moduleRankAlpha(module string) (int, float64) {
	r, alpha := c.rank, c.alpha
	for i, re := range c.patternRegex {
		if !re.MatchString(module) {
			continue
		}
		k := c.patternKeys[i]
		for _, p := range c.rankPattern {
			if p.key == k {
				r = int(p.value)
			}
		}
		for _, p := range c.alphaPattern {
			if p.key == k {
				alpha = p.value
			}
		}
		break
	}
	return r, alpha
}
