package fdn

// codec.go: tensors, placement and encoding of requests and responses (sections 5 and 15).

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
	"unicode/utf8"
)

var le = binary.LittleEndian

// Tensor is one tensor as the codec sees it; DataOffset and DataSize are relative to the area.
// Decoded tensors' Data is a view on the area (valid until the next call on the same client).
type Tensor struct {
	Name       string
	DType      DType
	NDim       uint32
	Shape      [MaxNDim]uint64
	DataOffset uint64
	DataSize   uint64
	Data       []byte // nil for CUDA_IPC
	// Location LocationCudaIPC (section 15): the data is in a CUDA allocation, not in the area.
	// The codec reads and writes these descriptors; this client sends and opens none.
	Location  uint32
	Device    int32
	IPCHandle [64]byte
	IPCOffset uint64
}

// Dims is the shape: Shape[:NDim]; nil for a nil tensor or one whose NDim is over MaxNDim (a
// tensor built by hand: it has no shape, and Layout, LoanBegin and the encoders refuse it,
// naming it). A scalar's Dims is empty, not nil.
func (t *Tensor) Dims() []uint64 {
	if t == nil || t.NDim > MaxNDim {
		return nil
	}
	return t.Shape[:t.NDim]
}

// Limits is what a decoder accepts.
type Limits struct {
	MaxTensors uint32
	MaxBytes   uint64
}

// DefaultLimits are the protocol's defaults (section 11).
var DefaultLimits = Limits{MaxTensors: MaxTensors, MaxBytes: 1 << 32}

// Request holds a request's fields (encode and decode).
type Request struct {
	Kind       uint16
	RequestID  uint64
	Flags      uint32
	Model      string
	Version    string
	DeadlineNs uint64
	Inputs     []Tensor
	Outputs    []string
	Params     []byte // a compact JSON object, or empty
}

// Response holds a response's fields (encode and decode).
type Response struct {
	RequestID     uint64
	Flags         uint32
	Status        Status
	Model         string
	Version       string
	Outputs       []Tensor
	Text          []byte
	Params        []byte
	RequiredBytes uint64
	names         map[string]string // decoded names, so repeated calls do not allocate
}

// RequestPayloadSize is section 5's payload_size of a request.
func RequestPayloadSize(inputs, outputs, paramsSize uint32) uint64 {
	return BodySize + DescSize*uint64(inputs) + NameSize*uint64(outputs) + uint64(paramsSize)
}

// ResponsePayloadSize is section 5's payload_size of a response.
func ResponsePayloadSize(outputs, textSize, paramsSize uint32) uint64 {
	return BodySize + DescSize*uint64(outputs) + uint64(textSize) + uint64(paramsSize)
}

// tensorBytes is product(shape) * itemsize, and false on overflow.
func tensorBytes(shape []uint64, itemsize uint64) (uint64, bool) {
	n := itemsize
	for _, d := range shape {
		if d != 0 && n > ^uint64(0)/d {
			return 0, false
		}
		n *= d
	}
	return n, true
}

// Layout places tensors after header and payload at multiples of 64 (section 5, "Placement"),
// setting DataOffset and DataSize; it returns the end of the last tensor. A tensor it refuses is
// named with its index and the fault (INVALID_INPUT).
func Layout(tensors []Tensor, payloadSize uint64) (uint64, error) {
	offset := align64(HeaderSize + payloadSize)
	for i := range tensors {
		t := &tensors[i]
		itemsize := t.DType.ItemSize()
		if itemsize == 0 {
			return 0, fail(InvalidInput, 0, "tensor %d (%q): unknown dtype code %d (known: 1..14)", i, t.Name, uint32(t.DType))
		}
		if t.NDim > MaxNDim {
			return 0, fail(InvalidInput, 0, "tensor %d (%q): %d dimensions (at most %d)", i, t.Name, t.NDim, MaxNDim)
		}
		size, ok := tensorBytes(t.Dims(), itemsize)
		if !ok {
			return 0, fail(InvalidInput, 0, "tensor %d (%q): shape %v of %s has more than 2^64 bytes", i, t.Name, t.Dims(), t.DType)
		}
		t.DataSize = size
		if t.Location == LocationCudaIPC { // section 15.2: no room in the area
			t.DataOffset = 0
			continue
		}
		if !hostShapeOK(t.Dims(), itemsize) { // an empty tensor every decoder refuses (step 7)
			return 0, fail(InvalidInput, 0, "tensor %d (%q): shape %v of %s is beyond 2^63 - 1 bytes over its nonzero dimensions",
				i, t.Name, t.Dims(), t.DType)
		}
		if size > ^uint64(0)-(DataAlign-1)-offset { // a wrapped end would pass for a small one
			return 0, fail(InvalidInput, 0, "tensor %d (%q): %d bytes at offset %d end past 2^64", i, t.Name, size, offset)
		}
		t.DataOffset = offset
		offset = align64(offset + size)
	}
	return offset, nil
}

// --- encoding ---------------------------------------------------------------------------------

// fieldProblem says why text cannot be a fixed field of size bytes (NUL-terminated UTF-8, section
// 5), or "": a NUL within it would end the name there, sending another one.
func fieldProblem(text string, size int) string {
	switch {
	case len(text) >= size:
		return fmt.Sprintf("is over %d bytes", size-1)
	case strings.IndexByte(text, 0) >= 0:
		return "holds a NUL byte (the field would end there)"
	case !utf8.ValidString(text):
		return "is not valid UTF-8"
	}
	return ""
}

// putFixed writes text and its NUL padding into dst, or says why it cannot (fieldProblem).
func putFixed(dst []byte, text string) string {
	if why := fieldProblem(text, len(dst)); why != "" {
		return why
	}
	n := copy(dst, text)
	for i := n; i < len(dst); i++ {
		dst[i] = 0
	}
	return ""
}

// descProblem says why t cannot be encoded as it is (a tensor built by hand, not laid out by
// Layout or decoded), or "": a decoder would refuse it (section 8 step 7).
func descProblem(t *Tensor) string {
	if t.NDim > MaxNDim {
		return fmt.Sprintf("%d dimensions (at most %d)", t.NDim, MaxNDim)
	}
	if t.Location != LocationHost && t.Location != LocationCudaIPC {
		return fmt.Sprintf("location %d (known: %d host, %d CUDA IPC)", t.Location, LocationHost, LocationCudaIPC)
	}
	itemsize := t.DType.ItemSize()
	if itemsize == 0 {
		return fmt.Sprintf("unknown dtype code %d (known: 1..14)", uint32(t.DType))
	}
	size, ok := tensorBytes(t.Dims(), itemsize)
	if !ok {
		return fmt.Sprintf("shape %v of %s has more than 2^64 bytes", t.Dims(), t.DType)
	}
	if size != t.DataSize {
		return fmt.Sprintf("DataSize %d, but its shape %v of %s takes %d bytes (Layout sets it)", t.DataSize, t.Dims(), t.DType, size)
	}
	return ""
}

func writeDescs(area []byte, at uint64, tensors []Tensor, rid uint64) error {
	for i := range tensors {
		t := &tensors[i]
		d := area[at : at+DescSize]
		for k := range d {
			d[k] = 0
		}
		if why := putFixed(d[dName:dName+NameSize], t.Name); why != "" {
			return fail(InvalidInput, rid, "tensor %d: name %q %s", i, t.Name, why)
		}
		if why := descProblem(t); why != "" {
			return fail(InvalidInput, rid, "tensor %d (%q): %s", i, t.Name, why)
		}
		if t.Location == LocationCudaIPC {
			le.PutUint32(d[dDevice:], uint32(t.Device))
			copy(d[dIPCHandle:dIPCHandle+64], t.IPCHandle[:])
			le.PutUint64(d[dIPCOffset:], t.IPCOffset)
		} else if t.DataOffset > uint64(len(area)) || t.DataSize > uint64(len(area))-t.DataOffset {
			return fail(TooLarge, rid, "tensor %q does not fit the area", t.Name)
		}
		le.PutUint32(d[dLocation:], t.Location)
		le.PutUint32(d[dDType:], uint32(t.DType))
		le.PutUint32(d[dNDim:], t.NDim)
		for k := uint32(0); k < t.NDim; k++ {
			le.PutUint64(d[dShape+8*k:], t.Shape[k])
		}
		if t.Location != LocationCudaIPC {
			le.PutUint64(d[dDataOffset:], t.DataOffset)
		}
		le.PutUint64(d[dDataSize:], t.DataSize)
		at += DescSize
	}
	return nil
}

func seal(area []byte, payload uint64, flags uint32, tensors []Tensor) {
	crc := crc32.Update(crc32.ChecksumIEEE(area[:hCRC]), crc32.IEEETable, area[HeaderSize:HeaderSize+payload])
	if flags&FlagDataCRC != 0 {
		for i := range tensors { // device data is never checksummed (15.2)
			if t := &tensors[i]; t.Location != LocationCudaIPC {
				crc = crc32.Update(crc, crc32.IEEETable, area[t.DataOffset:t.DataOffset+t.DataSize])
			}
		}
	}
	le.PutUint32(area[hCRC:], crc)
}

func putHeader(area []byte, kind uint16, rid, payload uint64, flags uint32) {
	h := area[:HeaderSize]
	le.PutUint32(h[hMagic:], MsgMagic)
	le.PutUint16(h[hVersion:], ProtocolVersion)
	le.PutUint16(h[hKind:], kind)
	le.PutUint64(h[hRequestID:], rid)
	le.PutUint32(h[hPayloadSize:], uint32(payload))
	le.PutUint32(h[hFlags:], flags)
	le.PutUint32(h[24:], 0)
	le.PutUint32(h[hCRC:], 0)
}

func zero(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

// EncodeRequest writes header, body, descriptors, output names, params and CRC; the tensors'
// data must already be in place at the offsets Layout gave.
func EncodeRequest(area []byte, r *Request) error {
	if r == nil {
		return fail(InvalidInput, 0, "the request to encode is nil")
	}
	rid := r.RequestID
	if len(r.Inputs) > MaxTensors || len(r.Outputs) > MaxTensors {
		return fail(TooLarge, rid, "%d inputs / %d outputs (at most %d)", len(r.Inputs), len(r.Outputs), MaxTensors)
	}
	if len(r.Params) > MaxParams {
		return fail(TooLarge, rid, "params of %d bytes (at most %d)", len(r.Params), MaxParams)
	}
	payload := RequestPayloadSize(uint32(len(r.Inputs)), uint32(len(r.Outputs)), uint32(len(r.Params)))
	if HeaderSize+payload > uint64(len(area)) {
		return fail(TooLarge, rid, "a request payload of %d bytes does not fit the area", payload)
	}
	body := area[HeaderSize : HeaderSize+BodySize]
	zero(body)
	if why := putFixed(body[qModel:qModel+NameSize], r.Model); why != "" {
		return fail(InvalidInput, rid, "model name %q %s", r.Model, why)
	}
	if why := putFixed(body[qVersion:qVersion+VersionSize], r.Version); why != "" {
		return fail(InvalidInput, rid, "model version %q %s", r.Version, why)
	}
	le.PutUint64(body[qDeadline:], r.DeadlineNs)
	le.PutUint32(body[qInputCount:], uint32(len(r.Inputs)))
	le.PutUint32(body[qOutputCount:], uint32(len(r.Outputs)))
	le.PutUint32(body[qParamsSize:], uint32(len(r.Params)))
	at := uint64(HeaderSize + BodySize)
	if err := writeDescs(area, at, r.Inputs, rid); err != nil {
		return err
	}
	at += DescSize * uint64(len(r.Inputs))
	for i, name := range r.Outputs {
		if why := putFixed(area[at:at+NameSize], name); why != "" {
			return fail(InvalidInput, rid, "requested output %d: name %q %s", i, name, why)
		}
		at += NameSize
	}
	copy(area[at:], r.Params)
	kind := r.Kind
	if kind == 0 {
		kind = KindInferRequest
	}
	putHeader(area, kind, rid, payload, r.Flags)
	seal(area, payload, r.Flags, r.Inputs)
	return nil
}

// EncodeResponse writes a response (the server's side; used by the vector tests).
func EncodeResponse(area []byte, r *Response) error {
	if r == nil {
		return fail(InvalidInput, 0, "the response to encode is nil")
	}
	rid := r.RequestID
	if len(r.Outputs) > MaxTensors {
		return fail(TooLarge, rid, "%d outputs (at most %d)", len(r.Outputs), MaxTensors)
	}
	payload := ResponsePayloadSize(uint32(len(r.Outputs)), uint32(len(r.Text)), uint32(len(r.Params)))
	if HeaderSize+payload > uint64(len(area)) {
		return fail(TooLarge, rid, "a response payload of %d bytes does not fit the area", payload)
	}
	body := area[HeaderSize : HeaderSize+BodySize]
	zero(body)
	if why := putFixed(body[sModel:sModel+NameSize], r.Model); why != "" {
		return fail(InvalidInput, rid, "model name %q %s", r.Model, why)
	}
	if why := putFixed(body[sVersion:sVersion+VersionSize], r.Version); why != "" {
		return fail(InvalidInput, rid, "model version %q %s", r.Version, why)
	}
	le.PutUint32(body[sStatus:], uint32(r.Status))
	le.PutUint32(body[sOutputCount:], uint32(len(r.Outputs)))
	le.PutUint32(body[sTextSize:], uint32(len(r.Text)))
	le.PutUint32(body[sParamsSize:], uint32(len(r.Params)))
	le.PutUint64(body[sRequiredBytes:], r.RequiredBytes)
	at := uint64(HeaderSize + BodySize)
	if err := writeDescs(area, at, r.Outputs, rid); err != nil {
		return err
	}
	at += DescSize * uint64(len(r.Outputs))
	at += uint64(copy(area[at:], r.Text))
	copy(area[at:], r.Params)
	putHeader(area, KindResponse, rid, payload, r.Flags)
	seal(area, payload, r.Flags, r.Outputs)
	return nil
}
