package jinja

// iterator is a Python iterator: the generators that jinja2's map, select, reject, selectattr,
// rejectattr, unique, batch and items filters return, and the reversed() iterator of reverse.
// Like Python's, it is lazy (nothing is evaluated until it is consumed, so an error in an
// unused generator never surfaces), single-use (a second loop over it sees nothing), always
// true, has no len(), and compares equal only to itself.
type iterator struct {
	kind  string // Python type name: "generator" or "list_reverseiterator"
	fname string // the generator function's name in jinja2, for repr: "sync_do_map"
	pull  func() (any, bool, error)
	done  bool
}

// reprString imitates Python's repr of the iterator. The address is a fixed fake one: Python's
// differs on every run anyway, and this keeps the word and character counts realistic.
func (it *iterator) reprString() string {
	if it.kind == "generator" {
		return "<generator object " + it.fname + " at 0x7f0000000000>"
	}
	return "<" + it.kind + " object at 0x7f0000000000>"
}

// next returns the next item; false when the iterator is exhausted (or failed).
func (it *iterator) next() (any, bool, error) {
	if it.done {
		return nil, false, nil
	}
	v, ok, err := it.pull()
	if !ok || err != nil {
		it.done = true
		it.pull = nil
	}
	return v, ok, err
}

// drain consumes the rest of the iterator.
func (it *iterator) drain(r *renderer) ([]any, error) {
	var out []any
	for {
		if !r.spend(1) {
			return nil, vErr(ErrLimit, "evaluation exceeds %d steps", r.opt.MaxSteps)
		}
		v, ok, err := it.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return out, nil
		}
		out = append(out, v)
		if len(out) > r.opt.MaxOutput {
			return nil, vErr(ErrLimit, "iterator yields more than %d items", r.opt.MaxOutput)
		}
	}
}

// sliceIter iterates over items.
func sliceIter(kind string, items []any) *iterator {
	i := 0
	return &iterator{kind: kind, pull: func() (any, bool, error) {
		if i >= len(items) {
			return nil, false, nil
		}
		i++
		return items[i-1], true, nil
	}}
}

// lazyIter is a generator whose source is v, obtained with iterate (and so checked) only when
// the first item is pulled, then transformed by step: step returns the item to yield and
// whether to yield it. With skipFalsy a false v yields nothing without being iterated (jinja2's
// map and select start with "if value:").
func lazyIter(r *renderer, fname string, v any, skipFalsy bool, step func(item any) (any, bool, error)) *iterator {
	var src *iterator
	return &iterator{kind: "generator", fname: fname, pull: func() (any, bool, error) {
		if skipFalsy && !truthy(v) {
			return nil, false, nil
		}
		if src == nil {
			if it, ok := v.(*iterator); ok {
				src = it
			} else {
				items, err := r.iterate(v)
				if err != nil {
					return nil, false, err
				}
				src = sliceIter("", items)
			}
		}
		for {
			item, ok, err := src.next()
			if err != nil || !ok {
				return nil, false, err
			}
			if !r.spend(1) {
				return nil, false, vErr(ErrLimit, "evaluation exceeds %d steps", r.opt.MaxSteps)
			}
			out, keep, err := step(item)
			if err != nil {
				return nil, false, err
			}
			if keep {
				return out, true, nil
			}
		}
	}}
}

// iterate is the package iterate that also consumes iterators.
func (r *renderer) iterate(v any) ([]any, error) {
	if it, ok := v.(*iterator); ok {
		return it.drain(r)
	}
	return iterate(v)
}
