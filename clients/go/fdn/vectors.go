package fdn

// vectors.go: the protocol's test vectors (section 14) through the codec.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// VectorFailure is one vector that did not decode or encode as its JSON says.
type VectorFailure struct {
	Vector string `json:"vector"`
	Why    string `json:"why"`
}

type vecTensor struct {
	Name       string   `json:"name"`
	Datatype   string   `json:"datatype"`
	Shape      []uint64 `json:"shape"`
	DataOffset uint64   `json:"data_offset"`
	DataSize   uint64   `json:"data_size"`
	DataHex    string   `json:"data_hex"`
	// section 15's CUDA_IPC tensors
	Location     string `json:"location"`
	Device       int32  `json:"device"`
	IPCHandleHex string `json:"ipc_handle_hex"`
	IPCOffset    uint64 `json:"ipc_offset"`
}

type vecExpect struct {
	Error         *string                    `json:"error"`
	ErrorCode     uint32                     `json:"error_code"`
	RequestID     uint64                     `json:"request_id"`
	Kind          uint16                     `json:"kind"`
	Flags         uint32                     `json:"flags"`
	Model         string                     `json:"model"`
	Version       string                     `json:"version"`
	DeadlineNs    uint64                     `json:"deadline_ns"`
	Inputs        []vecTensor                `json:"inputs"`
	Outputs       json.RawMessage            `json:"outputs"`
	Params        map[string]json.RawMessage `json:"params"`
	Status        uint32                     `json:"status"`
	StatusName    string                     `json:"status_name"`
	Text          string                     `json:"text"`
	RequiredBytes uint64                     `json:"required_bytes"`
}

type vector struct {
	Name     string    `json:"name"`
	DecodeAs string    `json:"decode_as"`
	Size     int       `json:"size"`
	Expect   vecExpect `json:"expect"`
}

// pyString is a JSON string as Python's json.dumps writes it (ensure_ascii).
func pyString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r < 0x20 || (r >= 0x7f && r < 0x10000):
			fmt.Fprintf(&b, `\u%04x`, r)
		case r >= 0x10000:
			r -= 0x10000
			fmt.Fprintf(&b, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// sameParams compares decoded parameters with the expected ones in section 14's encoding, the
// whitespace between tokens left out (a decode_* vector's parameters are followed by a MiB of it).
func sameParams(got, want []byte) error {
	var compact bytes.Buffer
	if len(got) > 0 {
		if err := json.Compact(&compact, got); err != nil {
			return fmt.Errorf("params: %v", err)
		}
	}
	if !bytes.Equal(compact.Bytes(), want) {
		return fmt.Errorf("params %q, expected %q", compact.Bytes(), want)
	}
	return nil
}

// paramsJSON is section 14's encoding: compact, keys sorted; empty for {}.
func paramsJSON(params map[string]json.RawMessage) []byte {
	if len(params) == 0 {
		return nil
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(pyString(k))
		b.WriteByte(':')
		b.Write(params[k])
	}
	b.WriteByte('}')
	return b.Bytes()
}

// tensors turns the JSON tensors into codec tensors and their data bytes.
func tensors(list []vecTensor) ([]Tensor, [][]byte, error) {
	ts := make([]Tensor, len(list))
	data := make([][]byte, len(list))
	for i, v := range list {
		if len(v.Shape) > MaxNDim {
			return nil, nil, fmt.Errorf("tensor %q: shape too long", v.Name)
		}
		ts[i] = Tensor{Name: v.Name, DType: DTypeFromName(v.Datatype), NDim: uint32(len(v.Shape)),
			DataOffset: v.DataOffset, DataSize: v.DataSize}
		copy(ts[i].Shape[:], v.Shape)
		if v.Location != "" {
			handle, err := hex.DecodeString(v.IPCHandleHex)
			if v.Location != "CUDA_IPC" || err != nil || len(handle) != 64 {
				return nil, nil, fmt.Errorf("tensor %q: location %q, handle %q", v.Name, v.Location, v.IPCHandleHex)
			}
			ts[i].Location, ts[i].Device, ts[i].IPCOffset = LocationCudaIPC, v.Device, v.IPCOffset
			copy(ts[i].IPCHandle[:], handle)
			continue
		}
		raw, err := hex.DecodeString(v.DataHex)
		if err != nil {
			return nil, nil, err
		}
		data[i] = raw
	}
	return ts, data, nil
}

func sameTensors(got []Tensor, want []vecTensor) error {
	ts, data, err := tensors(want)
	if err != nil {
		return err
	}
	if len(got) != len(ts) {
		return fmt.Errorf("decoded %d tensors, expected %d", len(got), len(ts))
	}
	for i := range ts {
		g, w := &got[i], &ts[i]
		if g.Name != w.Name || g.DType != w.DType || g.NDim != w.NDim || g.Shape != w.Shape ||
			g.DataOffset != w.DataOffset || g.DataSize != w.DataSize || !bytes.Equal(g.Data, data[i]) ||
			g.Location != w.Location || g.Device != w.Device || g.IPCHandle != w.IPCHandle || g.IPCOffset != w.IPCOffset {
			return fmt.Errorf("tensor %d (%q) differs from the expected decoding", i, g.Name)
		}
	}
	return nil
}

// place lays tensors out as an encoder must, checks the offsets match, and builds the area.
func place(ts []Tensor, data [][]byte, payload uint64) ([]byte, error) {
	placed := append([]Tensor(nil), ts...)
	end, err := Layout(placed, payload)
	if err != nil {
		return nil, err
	}
	area := make([]byte, end)
	for i := range placed {
		if placed[i].DataOffset != ts[i].DataOffset {
			return nil, fmt.Errorf("layout puts %q at %d, the vector at %d", ts[i].Name, placed[i].DataOffset, ts[i].DataOffset)
		}
		copy(area[placed[i].DataOffset:], data[i])
	}
	return area, nil
}

func checkError(err error, e *vecExpect) error {
	if e.Error == nil {
		return fmt.Errorf("decoding failed: %v", err)
	}
	if err == nil {
		return fmt.Errorf("decoded without error, expected %s", *e.Error)
	}
	fe := err.(*Error)
	if fe.Code.String() != *e.Error || uint32(fe.Code) != e.ErrorCode || fe.RequestID != e.RequestID {
		return fmt.Errorf("error %s (request %d: %s), expected %s (request %d)", fe.Code, fe.RequestID, fe.Message, *e.Error, e.RequestID)
	}
	return nil
}

func checkRequest(bin []byte, e *vecExpect, reencode bool) error {
	var got Request
	err := DecodeRequest(bin, DefaultLimits, &got)
	if err != nil || e.Error != nil {
		return checkError(err, e)
	}
	var outs []string
	if err := json.Unmarshal(e.Outputs, &outs); err != nil {
		return err
	}
	if got.Kind != e.Kind || got.RequestID != e.RequestID || got.Flags != e.Flags || got.DeadlineNs != e.DeadlineNs ||
		got.Model != e.Model || got.Version != e.Version || strings.Join(got.Outputs, "\x00") != strings.Join(outs, "\x00") {
		return fmt.Errorf("decoded fields differ: %+v", got)
	}
	params := paramsJSON(e.Params)
	if err := sameParams(got.Params, params); err != nil {
		return err
	}
	if err := sameTensors(got.Inputs, e.Inputs); err != nil || !reencode {
		return err
	}
	ts, data, err := tensors(e.Inputs)
	if err != nil {
		return err
	}
	area, err := place(ts, data, RequestPayloadSize(uint32(len(ts)), uint32(len(outs)), uint32(len(params))))
	if err != nil {
		return err
	}
	r := Request{Kind: e.Kind, RequestID: e.RequestID, Flags: e.Flags, Model: e.Model, Version: e.Version,
		DeadlineNs: e.DeadlineNs, Inputs: ts, Outputs: outs, Params: params}
	if err := EncodeRequest(area, &r); err != nil {
		return err
	}
	return sameBytes(area, bin)
}

func checkResponse(bin []byte, e *vecExpect, reencode bool) error {
	var got Response
	err := DecodeResponse(bin, DefaultLimits, &got)
	if err != nil || e.Error != nil {
		return checkError(err, e)
	}
	var outs []vecTensor
	if err := json.Unmarshal(e.Outputs, &outs); err != nil {
		return err
	}
	if e.Kind != KindResponse || got.RequestID != e.RequestID || got.Flags != e.Flags || uint32(got.Status) != e.Status ||
		got.Status.String() != e.StatusName || got.Model != e.Model || got.Version != e.Version ||
		string(got.Text) != e.Text || got.RequiredBytes != e.RequiredBytes {
		return fmt.Errorf("decoded fields differ: status %d model %q text %q", got.Status, got.Model, got.Text)
	}
	params := paramsJSON(e.Params)
	if err := sameParams(got.Params, params); err != nil {
		return err
	}
	if err := sameTensors(got.Outputs, outs); err != nil || !reencode {
		return err
	}
	ts, data, err := tensors(outs)
	if err != nil {
		return err
	}
	area, err := place(ts, data, ResponsePayloadSize(uint32(len(ts)), uint32(len(e.Text)), uint32(len(params))))
	if err != nil {
		return err
	}
	r := Response{RequestID: e.RequestID, Flags: e.Flags, Status: Status(e.Status), Model: e.Model,
		Version: e.Version, Outputs: ts, Text: []byte(e.Text), Params: params, RequiredBytes: e.RequiredBytes}
	if err := EncodeResponse(area, &r); err != nil {
		return err
	}
	return sameBytes(area, bin)
}

func sameBytes(mine, file []byte) error {
	if len(mine) != len(file) {
		return fmt.Errorf("encoded %d bytes, the file has %d", len(mine), len(file))
	}
	for i := range mine {
		if mine[i] != file[i] {
			return fmt.Errorf("encoding differs at byte %d", i)
		}
	}
	return nil
}

// areaOf is the area a vector's file stands for (spec 14): the file, then spaces up to size. Only
// the file of an area over 64 KiB is shorter, and it stops before all the spaces that end it; any
// other short file is a broken copy, not an area ending in spaces.
func areaOf(file []byte, size int) ([]byte, error) {
	switch n := len(file); {
	case n > size:
		return nil, fmt.Errorf("the .bin has %d bytes, the JSON says %d", n, size)
	case n == size:
		return file, nil
	case size <= 1<<16:
		return nil, fmt.Errorf("the .bin has %d bytes of an area of %d (only one over 64 KiB may leave out its spaces)", n, size)
	case n > 0 && file[n-1] == ' ':
		return nil, fmt.Errorf("the .bin of %d bytes ends in a space (it stops before all the spaces ending the area)", n)
	}
	return append(file, bytes.Repeat([]byte{' '}, size-len(file))...), nil
}

func checkVector(jsonPath string) error {
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		return err
	}
	// A field this harness does not know would go unchecked: refuse it (a new expectation needs
	// a compare here first).
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var v vector
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(jsonPath), err)
	}
	bin, err := os.ReadFile(strings.TrimSuffix(jsonPath, ".json") + ".bin")
	if err != nil {
		return err
	}
	if bin, err = areaOf(bin, v.Size); err != nil {
		return err
	}
	// Spec 14: request_* and response_* vectors are re-encoded; decode_* ones set fields a
	// decoder ignores (section 5), which an encoder writes 0, so they are decoded only.
	name := filepath.Base(jsonPath)
	reencode := strings.HasPrefix(name, "request_") || strings.HasPrefix(name, "response_")
	switch v.DecodeAs {
	case "request":
		return checkRequest(bin, &v.Expect, reencode)
	case "response":
		return checkResponse(bin, &v.Expect, reencode)
	}
	return fmt.Errorf("decode_as %q is neither request nor response", v.DecodeAs)
}

// CheckVectors decodes every NAME.bin/NAME.json pair in dir and re-encodes the request_* and
// response_* ones (section 14).
func CheckVectors(dir string) (passed int, failures []VectorFailure, err error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return 0, nil, err
	}
	sort.Strings(paths) // none: 0 passed, 0 failed, as the C and Rust drivers report it
	failures = []VectorFailure{}
	for _, p := range paths {
		if err := checkVector(p); err != nil {
			failures = append(failures, VectorFailure{strings.TrimSuffix(filepath.Base(p), ".json"), err.Error()})
		} else {
			passed++
		}
	}
	return passed, failures, nil
}
