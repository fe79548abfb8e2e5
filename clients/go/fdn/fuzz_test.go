package fdn

import (
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// reseal recomputes the CRC after a mutation, as _vector_messages._reseal does (header bytes
// [0,28), then the payload as far as the buffer goes), so the checks after the CRC are reached.
func reseal(b []byte) {
	if len(b) < HeaderSize {
		return
	}
	end := uint64(HeaderSize) + uint64(le.Uint32(b[hPayloadSize:]))
	if end > uint64(len(b)) {
		end = uint64(len(b))
	}
	le.PutUint32(b[hCRC:], crc32.Update(crc32.ChecksumIEEE(b[:hCRC]), crc32.IEEETable, b[HeaderSize:end]))
}

// within fails unless view lies inside area (decoded views never reach past the message).
func within(t *testing.T, area, view []byte, what string) {
	if len(view) == 0 {
		return
	}
	for i := range area {
		if &area[i] == &view[0] {
			if len(area)-i < len(view) {
				break
			}
			return
		}
	}
	t.Fatalf("%s: a view of %d bytes outside the area of %d", what, len(view), len(area))
}

// FuzzDecode feeds every committed vector, mutated and re-sealed by the fuzzer, to both decoders;
// what decodes is walked and encoded again. go test -fuzz=FuzzDecode -fuzztime=60s ./fdn
func FuzzDecode(f *testing.F) {
	for _, dir := range []string{vectorsDir(), filepath.Join(vectorsDir(), "cuda_ipc")} {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.bin"))
		for _, p := range paths {
			raw, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(raw, false)
			f.Add(raw, true)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte, resealed bool) {
		area := append([]byte(nil), raw...)
		if resealed {
			reseal(area)
		}
		var req Request
		if DecodeRequest(area, DefaultLimits, &req) == nil {
			for i := range req.Inputs {
				within(t, area, req.Inputs[i].Data, "input")
			}
			within(t, area, req.Params, "params")
			_ = EncodeRequest(append([]byte(nil), area...), &req)
		}
		var resp Response
		if DecodeResponse(area, Limits{MaxTensors: 1 << 20, MaxBytes: 1 << 62}, &resp) == nil {
			for i := range resp.Outputs {
				within(t, area, resp.Outputs[i].Data, "output")
			}
			within(t, area, resp.Text, "text")
			within(t, area, resp.Params, "params")
			_ = EncodeResponse(append([]byte(nil), area...), &resp)
		}
	})
}
