package gguf

// DataSection returns the whole tensor-data section of a memory-mapped file (nil when the file is read on demand
// or closed). Runtimes wrap it as one host buffer and place every tensor inside it without copying; TensorInfo
// offsets are relative to its start.
func (f *File) DataSection() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.data == nil || f.DataOffset > int64(len(f.data)) {
		return nil
	}
	return f.data[f.DataOffset:len(f.data):len(f.data)]
}
