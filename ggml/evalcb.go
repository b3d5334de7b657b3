package ggml

// #include <stdint.h>
// #include <stdlib.h>
// #include <string.h>
// #include "ggml.h"
// #include "ggml-backend.h"
//
// typedef struct { char *suffix; uintptr_t handle; } idefics2_node_cb;
// extern _Bool idefics2NodeComputed(char *name, uintptr_t handle);
// static _Bool idefics2_node_cb_eval(struct ggml_tensor *t, _Bool ask, void *ud) {
//     idefics2_node_cb *d = (idefics2_node_cb *) ud;
//     const char *n = ggml_get_name(t);
//     size_t ln = strlen(n), ls = strlen(d->suffix);
//     if (ln < ls || strcmp(n + ln - ls, d->suffix) != 0) return ask ? 0 : 1;
//     if (ask) return 1;
//     return idefics2NodeComputed((char *) n, d->handle);
// }
// static void idefics2_set_node_cb(ggml_backend_sched_t s, idefics2_node_cb *d) {
//     ggml_backend_sched_set_eval_callback(s, d ? (ggml_backend_sched_eval_callback) idefics2_node_cb_eval : NULL, d);
// }
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// nodeCallback is what SetNodeCallback installed: the C data the scheduler holds and the handle of the Go function.
type nodeCallback struct {
	data   *C.idefics2_node_cb
	handle cgo.Handle
}

// SetNodeCallback makes Compute call fn with the name of every node whose name ends in suffix, right after that
// node is computed; nil fn removes the callback. The scheduler then computes each graph in pieces that end at those
// nodes (ggml_backend_sched_set_eval_callback), so a callback costs a synchronization per matching node: set it
// only for graphs whose progress someone watches, and remove it after. fn runs on the goroutine that called
// Compute.
func (s *Scheduler) SetNodeCallback(suffix string, fn func(name string)) {
	if s == nil || s.ptr == nil {
		return
	}
	if s.nodeCB != nil {
		C.idefics2_set_node_cb(s.ptr, nil)
		s.nodeCB.free()
		s.nodeCB = nil
	}
	if fn == nil {
		return
	}
	d := (*C.idefics2_node_cb)(C.malloc(C.size_t(unsafe.Sizeof(C.idefics2_node_cb{}))))
	h := cgo.NewHandle(fn)
	d.suffix = C.CString(suffix)
	d.handle = C.uintptr_t(h)
	s.nodeCB = &nodeCallback{data: d, handle: h}
	C.idefics2_set_node_cb(s.ptr, d)
}

func (cb *nodeCallback) free() {
	C.free(unsafe.Pointer(cb.data.suffix))
	C.free(unsafe.Pointer(cb.data))
	cb.handle.Delete()
}

// idefics2NodeComputed calls the Go function of a node callback; returning true lets the computation go on.
//
//export idefics2NodeComputed
func idefics2NodeComputed(name *C.char, handle C.uintptr_t) C._Bool {
	if fn, ok := cgo.Handle(handle).Value().(func(string)); ok {
		fn(C.GoString(name))
	}
	return true
}
