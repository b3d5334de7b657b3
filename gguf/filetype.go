package gguf

import "fmt"

// FileType is the value of general.file_type: the type most of a file's matrices have. The values are llama.cpp's
// enum llama_ftype (llama.h), plus FileTypeNF4 for this project's NF4 files.
type FileType uint32

// File types (llama_ftype's LLAMA_FTYPE_ALL_F32, LLAMA_FTYPE_MOSTLY_F16, …).
const (
	FileTypeF32    FileType = 0
	FileTypeF16    FileType = 1
	FileTypeQ4_0   FileType = 2
	FileTypeQ4_1   FileType = 3
	FileTypeQ8_0   FileType = 7
	FileTypeQ5_0   FileType = 8
	FileTypeQ5_1   FileType = 9
	FileTypeQ2_K   FileType = 10
	FileTypeQ3_K_M FileType = 12
	FileTypeQ4_K_S FileType = 14
	FileTypeQ4_K_M FileType = 15
	FileTypeQ5_K_S FileType = 16
	FileTypeQ5_K_M FileType = 17
	FileTypeQ6_K   FileType = 18
	FileTypeBF16   FileType = 32
	// FileTypeNF4 is this project's file type for files whose matrices are NF4 (stored as I8 block streams,
	// docs/formats.md). llama.cpp has no such type; 1024 is far above its enum (which ends below 64) so it can
	// never collide with a future llama.cpp value.
	FileTypeNF4 FileType = 1024
)

var fileTypeNames = map[FileType]string{
	FileTypeF32: "F32", FileTypeF16: "F16", FileTypeQ4_0: "Q4_0", FileTypeQ4_1: "Q4_1", FileTypeQ8_0: "Q8_0",
	FileTypeQ5_0: "Q5_0", FileTypeQ5_1: "Q5_1", FileTypeQ2_K: "Q2_K", FileTypeQ3_K_M: "Q3_K_M",
	FileTypeQ4_K_S: "Q4_K_S", FileTypeQ4_K_M: "Q4_K_M", FileTypeQ5_K_S: "Q5_K_S", FileTypeQ5_K_M: "Q5_K_M",
	FileTypeQ6_K: "Q6_K", FileTypeBF16: "BF16", FileTypeNF4: "NF4",
}

// String returns the type's name as llama.cpp prints it without "MOSTLY_" ("Q4_K_M", "F16"), or "ftype N" for a
// value this package does not name.
func (t FileType) String() string {
	if n, ok := fileTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("ftype %d", uint32(t))
}
