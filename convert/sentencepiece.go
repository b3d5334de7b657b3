package convert

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// spModel is the part of a SentencePiece model (tokenizer.model, a serialized
// sentencepiece.ModelProto) that a GGUF vocabulary needs.
//
// Source of truth: sentencepiece_model.proto. ModelProto: 1 = repeated SentencePiece pieces,
// 2 = TrainerSpec, 3 = NormalizerSpec. SentencePiece: 1 = piece (string), 2 = score (float),
// 3 = type (enum, default NORMAL = 1). TrainerSpec: 3 = model_type (enum, default UNIGRAM = 1;
// BPE = 2), 35 = byte_fallback, 40..43 = unk_id/bos_id/eos_id/pad_id (defaults 0, 1, 2, −1).
// NormalizerSpec: 3 = add_dummy_prefix (default true).
type spModel struct {
	pieces []string
	scores []float32
	types  []int32

	modelType      int32 // 1 unigram, 2 BPE, 3 word, 4 char
	byteFallback   bool
	unkID, bosID   int32
	eosID, padID   int32
	addDummyPrefix bool
}

// SentencePiece model types (TrainerSpec.ModelType).
const (
	spModelUnigram = 1
	spModelBPE     = 2
)

// errProto is wrapped by every protobuf decoding error.
var errProto = errors.New("malformed protobuf")

// protoField is one decoded protobuf field: its number, wire type and value (varint or fixed
// value in num, bytes for length-delimited fields).
type protoField struct {
	num   int
	wire  int
	num64 uint64
	bytes []byte
}

// protoFields decodes the top-level fields of a protobuf message.
func protoFields(data []byte, visit func(f protoField) error) error {
	for len(data) > 0 {
		key, n := binary.Uvarint(data)
		if n <= 0 {
			return fmt.Errorf("%w: bad field key", errProto)
		}
		data = data[n:]
		f := protoField{num: int(key >> 3), wire: int(key & 7)}
		if key>>3 == 0 || key>>3 > math.MaxInt32 {
			return fmt.Errorf("%w: field number %d", errProto, key>>3)
		}
		switch f.wire {
		case 0:
			v, n := binary.Uvarint(data)
			if n <= 0 {
				return fmt.Errorf("%w: field %d: bad varint", errProto, f.num)
			}
			f.num64, data = v, data[n:]
		case 1:
			if len(data) < 8 {
				return fmt.Errorf("%w: field %d: truncated fixed64", errProto, f.num)
			}
			f.num64, data = binary.LittleEndian.Uint64(data), data[8:]
		case 2:
			l, n := binary.Uvarint(data)
			if n <= 0 || l > uint64(len(data)-n) {
				return fmt.Errorf("%w: field %d: length beyond the end of the data", errProto, f.num)
			}
			f.bytes, data = data[n:n+int(l)], data[n+int(l):]
		case 5:
			if len(data) < 4 {
				return fmt.Errorf("%w: field %d: truncated fixed32", errProto, f.num)
			}
			f.num64, data = uint64(binary.LittleEndian.Uint32(data)), data[4:]
		default:
			return fmt.Errorf("%w: field %d: unsupported wire type %d", errProto, f.num, f.wire)
		}
		if err := visit(f); err != nil {
			return err
		}
	}
	return nil
}

// parseSentencePiece decodes a SentencePiece ModelProto.
func parseSentencePiece(data []byte) (*spModel, error) {
	m := &spModel{modelType: spModelUnigram, unkID: 0, bosID: 1, eosID: 2, padID: -1, addDummyPrefix: true}
	err := protoFields(data, func(f protoField) error {
		switch f.num {
		case 1:
			if f.wire != 2 {
				return fmt.Errorf("%w: pieces[%d]: wire type %d", errProto, len(m.pieces), f.wire)
			}
			return m.addPiece(f.bytes)
		case 2:
			if f.wire != 2 {
				return fmt.Errorf("%w: trainer_spec: wire type %d", errProto, f.wire)
			}
			return m.parseTrainerSpec(f.bytes)
		case 3:
			if f.wire != 2 {
				return fmt.Errorf("%w: normalizer_spec: wire type %d", errProto, f.wire)
			}
			return protoFields(f.bytes, func(g protoField) error {
				if g.num == 3 && g.wire == 0 {
					m.addDummyPrefix = g.num64 != 0
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(m.pieces) == 0 {
		return nil, fmt.Errorf("%w: no pieces", errProto)
	}
	return m, nil
}

func (m *spModel) addPiece(data []byte) error {
	i := len(m.pieces)
	var piece string
	var score float32
	typ := int32(1) // SentencePiece.Type default NORMAL
	hasPiece := false
	err := protoFields(data, func(f protoField) error {
		switch {
		case f.num == 1 && f.wire == 2:
			piece, hasPiece = string(f.bytes), true
		case f.num == 2 && f.wire == 5:
			score = math.Float32frombits(uint32(f.num64))
		case f.num == 3 && f.wire == 0:
			typ = int32(f.num64)
			if f.num64 > 6 || f.num64 == 0 {
				return fmt.Errorf("%w: pieces[%d]: type %d not in 1..6", errProto, i, f.num64)
			}
		case f.num <= 3:
			return fmt.Errorf("%w: pieces[%d]: field %d has wire type %d", errProto, i, f.num, f.wire)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !hasPiece {
		return fmt.Errorf("%w: pieces[%d]: no piece text", errProto, i)
	}
	if math.IsNaN(float64(score)) || math.IsInf(float64(score), 0) {
		return fmt.Errorf("%w: pieces[%d]: score %v", errProto, i, score)
	}
	m.pieces = append(m.pieces, piece)
	m.scores = append(m.scores, score)
	m.types = append(m.types, typ)
	return nil
}

func (m *spModel) parseTrainerSpec(data []byte) error {
	return protoFields(data, func(f protoField) error {
		if f.wire != 0 {
			return nil
		}
		v := int32(int64(f.num64)) // int32 fields: negative values are sign-extended varints
		switch f.num {
		case 3:
			m.modelType = v
		case 35:
			m.byteFallback = f.num64 != 0
		case 40:
			m.unkID = v
		case 41:
			m.bosID = v
		case 42:
			m.eosID = v
		case 43:
			m.padID = v
		}
		return nil
	})
}
