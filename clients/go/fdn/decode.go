package fdn

// decode.go: checked decoding of requests and responses, in the order of section 8.

import (
	"bytes"
	"hash/crc32"
	"math"
	"unicode/utf8"
)

// --- decoding (section 8, its checks in its order) -----------------------------------------

// checkHeader checks the header at the start of msg, a copy of the start of an area of areaLen
// bytes (or the area itself): payload_size must fit both.
func checkHeader(area []byte, areaLen uint64) (rid uint64, payload uint32, flags uint32, err error) {
	rid = le.Uint64(area[hRequestID:])
	if m := le.Uint32(area[hMagic:]); m != MsgMagic {
		return rid, 0, 0, fail(BadMagic, rid, "bad magic 0x%08X (want 0x%08X)", m, MsgMagic)
	}
	if v := le.Uint16(area[hVersion:]); v != ProtocolVersion {
		return rid, 0, 0, fail(BadVersion, rid, "protocol version %d (this side speaks %d)", v, ProtocolVersion)
	}
	payload = le.Uint32(area[hPayloadSize:])
	if end := HeaderSize + uint64(payload); payload < BodySize || end > areaLen || end > uint64(len(area)) {
		return rid, 0, 0, fail(InvalidInput, rid, "payload_size %d outside the area of %d bytes", payload, areaLen)
	}
	return rid, payload, le.Uint32(area[hFlags:]), nil
}

func checkCRC(area []byte, payload uint32, rid uint64, tensors []Tensor) error {
	crc := crc32.Update(crc32.ChecksumIEEE(area[:hCRC]), crc32.IEEETable, area[HeaderSize:HeaderSize+uint64(payload)])
	for i := range tensors {
		crc = crc32.Update(crc, crc32.IEEETable, tensors[i].Data) // nil for CUDA_IPC: not covered
	}
	if want := le.Uint32(area[hCRC:]); crc != want {
		return fail(BadChecksum, rid, "CRC32 0x%08X != 0x%08X in the header", crc, want)
	}
	return nil
}

// fixedText reads a NUL-terminated UTF-8 fixed field (of a client's copy of a response, or of
// a caller's own buffer: it is read twice, to check and to copy).
func fixedText(field []byte, names map[string]string) (string, bool) {
	n := bytes.IndexByte(field, 0)
	if n < 0 || !utf8.Valid(field[:n]) {
		return "", false
	}
	if names != nil {
		if s, ok := names[string(field[:n])]; ok {
			return s, true
		}
		s := string(field[:n])
		if len(names) < 4096 {
			names[s] = s
		}
		return s, true
	}
	return string(field[:n]), true
}

// decodeTensor checks the descriptor at `at` in msg; a HOST tensor's bytes must lie in data (the
// area msg was copied from, or msg itself), and its Data is a view on data.
func decodeTensor(msg, data []byte, at uint64, t *Tensor, rid uint64, names map[string]string) error {
	d := msg[at : at+DescSize]
	name, ok := fixedText(d[dName:dName+NameSize], names)
	if !ok {
		return fail(InvalidInput, rid, "tensor name is not valid NUL-terminated UTF-8")
	}
	ndim := le.Uint32(d[dNDim:])
	if ndim > MaxNDim {
		return fail(InvalidInput, rid, "tensor %q: ndim %d > %d", name, ndim, MaxNDim)
	}
	loc := le.Uint32(d[dLocation:])
	if loc != LocationHost && loc != LocationCudaIPC {
		return fail(InvalidInput, rid, "tensor %q: unsupported location %d", name, loc)
	}
	if loc == LocationCudaIPC {
		return decodeCudaTensor(d, name, ndim, t, rid)
	}
	dtype := DType(le.Uint32(d[dDType:]))
	itemsize := dtype.ItemSize()
	if itemsize == 0 {
		return fail(InvalidInput, rid, "tensor %q: unknown dtype code %d (known: 1..14)", name, dtype)
	}
	var shape [MaxNDim]uint64
	for k := uint32(0); k < ndim; k++ {
		shape[k] = le.Uint64(d[dShape+8*k:])
	}
	offset, size := le.Uint64(d[dDataOffset:]), le.Uint64(d[dDataSize:])
	if !hostShapeOK(shape[:ndim], itemsize) {
		return fail(InvalidInput, rid, "tensor %q: shape beyond 2^63 - 1 bytes over its nonzero dimensions", name)
	}
	if want, ok := tensorBytes(shape[:ndim], itemsize); !ok || want != size {
		return fail(InvalidInput, rid, "tensor %q: data_size %d != shape x %d bytes", name, size, itemsize)
	}
	areaSize := uint64(len(data))
	if offset < HeaderSize || offset > areaSize || size > areaSize-offset {
		return fail(InvalidInput, rid, "tensor %q: bytes at %d outside the area of %d bytes", name, offset, areaSize)
	}
	if offset%itemsize != 0 {
		return fail(InvalidInput, rid, "tensor %q: data_offset %d not aligned to %d", name, offset, itemsize)
	}
	*t = Tensor{Name: name, DType: dtype, NDim: ndim, Shape: shape, DataOffset: offset, DataSize: size,
		Data: data[offset : offset+size : offset+size]}
	return nil
}

// hostShapeOK reports whether itemsize x the nonzero dimensions is at most 2^63 - 1 (section 8
// step 7, HOST): a tensor with a 0 has no bytes, but array libraries (their sizes signed 64-bit)
// still cannot hold a wider shape.
func hostShapeOK(shape []uint64, itemsize uint64) bool {
	n := itemsize
	for _, d := range shape {
		if d == 0 {
			continue
		}
		if n > math.MaxInt64/d {
			return false
		}
		n *= d
	}
	return true
}

// decodeCudaTensor is section 15.3, in its order (the handle is not opened here).
func decodeCudaTensor(d []byte, name string, ndim uint32, t *Tensor, rid uint64) error {
	dtype := DType(le.Uint32(d[dDType:]))
	itemsize := dtype.ItemSize()
	if itemsize == 0 {
		return fail(InvalidInput, rid, "tensor %q: unknown dtype code %d", name, dtype)
	}
	var shape [MaxNDim]uint64
	for k := uint32(0); k < ndim; k++ {
		shape[k] = le.Uint64(d[dShape+8*k:])
	}
	size := le.Uint64(d[dDataSize:])
	if want, ok := tensorBytes(shape[:ndim], itemsize); !ok || want != size || size == 0 {
		return fail(InvalidInput, rid, "tensor %q: CUDA_IPC data_size %d is not shape x %d (> 0)", name, size, itemsize)
	}
	if le.Uint64(d[dDataOffset:]) != 0 {
		return fail(InvalidInput, rid, "tensor %q: CUDA_IPC data_offset must be 0", name)
	}
	device := int32(le.Uint32(d[dDevice:]))
	if device < 0 {
		return fail(InvalidInput, rid, "tensor %q: device %d < 0", name, device)
	}
	var handle [64]byte
	copy(handle[:], d[dIPCHandle:dIPCHandle+64])
	if handle == [64]byte{} {
		return fail(InvalidInput, rid, "tensor %q: the IPC handle is all zeros", name)
	}
	offset := le.Uint64(d[dIPCOffset:])
	if offset%itemsize != 0 || offset > ^uint64(0)-size {
		return fail(InvalidInput, rid, "tensor %q: bad ipc_offset %d", name, offset)
	}
	*t = Tensor{Name: name, DType: dtype, NDim: ndim, Shape: shape, DataSize: size, Location: LocationCudaIPC,
		Device: device, IPCHandle: handle, IPCOffset: offset}
	return nil
}

// DecodeRequest checks (section 8) and decodes a request; tensors' Data are views on area.
func DecodeRequest(area []byte, lim Limits, out *Request) error {
	if out == nil {
		return fail(InvalidInput, 0, "the request to decode into is nil")
	}
	if len(area) < HeaderSize+BodySize {
		return fail(InvalidInput, 0, "area of %d bytes is smaller than a request header", len(area))
	}
	rid, payload, flags, err := checkHeader(area, uint64(len(area)))
	if err != nil {
		return err
	}
	body := area[HeaderSize:]
	nIn, nOut, nParams := le.Uint32(body[qInputCount:]), le.Uint32(body[qOutputCount:]), le.Uint32(body[qParamsSize:])
	if nParams > MaxParams { // step 3: before the CRC reads them
		return fail(TooLarge, rid, "params_size %d bytes (at most %d)", nParams, MaxParams)
	}
	if uint64(payload) != RequestPayloadSize(nIn, nOut, nParams) {
		return fail(InvalidInput, rid, "payload_size %d does not match the counts in the body", payload)
	}
	if flags&FlagDataCRC == 0 {
		if err := checkCRC(area, payload, rid, nil); err != nil {
			return err
		}
	}
	kind := le.Uint16(area[hKind:])
	if kind != KindInferRequest && kind != KindMetadataRequest && kind != KindStatsRequest {
		return fail(InvalidInput, rid, "message kind %d is not a request", kind)
	}
	if nIn > lim.MaxTensors || nOut > lim.MaxTensors {
		return fail(TooLarge, rid, "%d inputs / %d outputs requested (at most %d)", nIn, nOut, lim.MaxTensors)
	}
	model, ok := fixedText(body[qModel:qModel+NameSize], nil)
	if !ok {
		return fail(InvalidInput, rid, "model name is not valid UTF-8")
	}
	at, total, err := decodeInputs(area, HeaderSize+BodySize, nIn, rid, out)
	if err != nil {
		return err
	}
	if total > lim.MaxBytes {
		return fail(TooLarge, rid, "%d bytes of inputs (at most %d)", total, lim.MaxBytes)
	}
	if flags&FlagDataCRC != 0 {
		if err := checkCRC(area, payload, rid, out.Inputs); err != nil {
			return err
		}
	}
	if at, err = decodeOutputNames(area, at, nOut, rid, out); err != nil {
		return err
	}
	version, ok := fixedText(body[qVersion:qVersion+VersionSize], nil)
	if !ok {
		return fail(InvalidInput, rid, "model version is not valid UTF-8")
	}
	params := area[at : at+uint64(nParams)]
	if why := ParamsProblem(params); nParams > 0 && why != "" {
		return fail(InvalidInput, rid, "%s", why)
	}
	out.Kind, out.RequestID, out.Flags, out.Model, out.Version = kind, rid, flags, model, version
	out.DeadlineNs, out.Params = le.Uint64(body[qDeadline:]), params
	return nil
}

// decodeInputs decodes the n input descriptors from at on into out.Inputs, refusing a name given
// twice; it returns the offset past them and the inputs' bytes in all.
func decodeInputs(area []byte, at uint64, n uint32, rid uint64, out *Request) (uint64, uint64, error) {
	out.Inputs = out.Inputs[:0]
	total := uint64(0)
	for i := uint32(0); i < n; i++ {
		var t Tensor
		if err := decodeTensor(area, area, at, &t, rid, nil); err != nil {
			return 0, 0, err
		}
		for k := range out.Inputs {
			if out.Inputs[k].Name == t.Name {
				return 0, 0, fail(InvalidInput, rid, "input %q appears twice", t.Name)
			}
		}
		out.Inputs = append(out.Inputs, t)
		if total += t.DataSize; total < t.DataSize {
			total = math.MaxUint64 // CUDA_IPC sizes are not bounded by the area: saturate, never wrap
		}
		at += DescSize
	}
	return at, total, nil
}

// decodeOutputNames decodes the n output names from at on into out.Outputs; it returns the
// offset past them.
func decodeOutputNames(area []byte, at uint64, n uint32, rid uint64, out *Request) (uint64, error) {
	out.Outputs = out.Outputs[:0]
	for i := uint32(0); i < n; i++ {
		name, ok := fixedText(area[at:at+NameSize], nil)
		if !ok {
			return 0, fail(InvalidInput, rid, "output name is not valid UTF-8")
		}
		out.Outputs = append(out.Outputs, name)
		at += NameSize
	}
	return at, nil
}

// DecodeResponse checks (section 8) and decodes a response; outputs' Data, Text and Params are
// views on area. It reads fields of area more than once: for an area another process may write
// meanwhile (a client's response area), decode a copy (snapshotResponse, decodeResponse).
func DecodeResponse(area []byte, lim Limits, out *Response) error {
	return decodeResponse(area, area, lim, out)
}

// snapshotResponse copies the header and payload of the response at the start of area into snap
// (reused: appended to from length 0, so it allocates only to grow) and returns it: the header
// and body first, then the rest of the payload if the payload_size of that copy fits the area
// (if not, the copy stops there and decodeResponse refuses it). Each byte of area is read once,
// so a server rewriting the area meanwhile cannot pass one check with one value and have another
// read use another: a torn copy fails the CRC, like any other corrupt message.
func snapshotResponse(area, snap []byte) []byte {
	const head = HeaderSize + BodySize
	snap = snap[:0]
	if len(area) < head {
		return snap
	}
	snap = append(snap, area[:head]...)
	end := HeaderSize + uint64(le.Uint32(snap[hPayloadSize:]))
	if end > head && end <= uint64(len(area)) {
		snap = append(snap, area[head:end]...)
	}
	return snap
}

// decodeResponse checks (section 8) and decodes the response in msg, a copy of the header and
// payload of the response at the start of area (or area itself). Every field is read from msg
// only; the CRC covers msg (with FLAG_DATA_CRC, also the outputs' Data, read from area). The
// outputs' Data are views on area at offsets checked in msg against len(area); Text and Params
// are views on msg.
func decodeResponse(msg, area []byte, lim Limits, out *Response) error {
	if out == nil {
		return fail(InvalidInput, 0, "the response to decode into is nil")
	}
	if len(area) < HeaderSize+BodySize || len(msg) < HeaderSize+BodySize {
		return fail(InvalidInput, 0, "area of %d bytes is smaller than a response header", len(area))
	}
	rid, payload, flags, err := checkHeader(msg, uint64(len(area)))
	if err != nil {
		return err
	}
	body := msg[HeaderSize:]
	nOut, nText, nParams := le.Uint32(body[sOutputCount:]), le.Uint32(body[sTextSize:]), le.Uint32(body[sParamsSize:])
	if uint64(payload) != ResponsePayloadSize(nOut, nText, nParams) || nText > MaxText {
		return fail(InvalidInput, rid, "payload_size %d does not match the counts in the body", payload)
	}
	if flags&FlagDataCRC == 0 {
		if err := checkCRC(msg, payload, rid, nil); err != nil {
			return err
		}
	}
	if kind := le.Uint16(msg[hKind:]); kind != KindResponse {
		return fail(InvalidInput, rid, "message kind %d is not a response", kind)
	}
	if nOut > lim.MaxTensors {
		return fail(TooLarge, rid, "%d outputs (at most %d)", nOut, lim.MaxTensors)
	}
	if out.names == nil {
		out.names = make(map[string]string)
	}
	out.Outputs = out.Outputs[:0]
	at := uint64(HeaderSize + BodySize)
	for i := uint32(0); i < nOut; i++ {
		out.Outputs = append(out.Outputs, Tensor{})
		if err := decodeTensor(msg, area, at, &out.Outputs[i], rid, out.names); err != nil {
			return err
		}
		for k := uint32(0); k < i; k++ {
			if out.Outputs[k].Name == out.Outputs[i].Name {
				return fail(InvalidInput, rid, "output %q appears twice", out.Outputs[i].Name)
			}
		}
		at += DescSize
	}
	if flags&FlagDataCRC != 0 {
		if err := checkCRC(msg, payload, rid, out.Outputs); err != nil {
			return err
		}
	}
	model, ok1 := fixedText(body[sModel:sModel+NameSize], out.names)
	version, ok2 := fixedText(body[sVersion:sVersion+VersionSize], out.names)
	if !ok1 || !ok2 {
		return fail(InvalidInput, rid, "model name or version is not valid UTF-8")
	}
	text := msg[at : at+uint64(nText) : at+uint64(nText)]
	params := msg[at+uint64(nText) : at+uint64(nText)+uint64(nParams) : at+uint64(nText)+uint64(nParams)]
	if why := ParamsProblem(params); nParams > 0 && why != "" {
		return fail(InvalidInput, rid, "response %s", why)
	}
	out.RequestID, out.Flags, out.Status = rid, flags, Status(le.Uint32(body[sStatus:]))
	out.Model, out.Version, out.Text, out.Params = model, version, text, params
	out.RequiredBytes = le.Uint64(body[sRequiredBytes:])
	return nil
}
