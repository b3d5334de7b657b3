package gguf

import "testing"

func TestFileTypeString(t *testing.T) {
	tests := []struct {
		t    FileType
		want string
	}{
		{FileTypeF32, "F32"},
		{FileTypeQ4_K_M, "Q4_K_M"},
		{FileTypeBF16, "BF16"},
		{FileTypeNF4, "NF4"},
		{FileType(5), "ftype 5"},
	}
	for _, tc := range tests {
		if got := tc.t.String(); got != tc.want {
			t.Errorf("FileType(%d).String() = %q, want %q", uint32(tc.t), got, tc.want)
		}
	}
}
