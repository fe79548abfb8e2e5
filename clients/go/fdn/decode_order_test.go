package fdn

// DecodeRequest's checks that the vectors leave open: the vectors give each refused message one
// fault, so the order of section 8's steps 8 (the inputs' bytes) and 9 (the data CRC) and the
// text of a name given twice were not pinned (a decoder with either changed passed them all).

import "testing"

// requestWithData encodes a request of the given inputs (INT32 of 4 elements each, their data in
// place) with flags into an area of its own.
func requestWithData(t *testing.T, flags uint32, names ...string) []byte {
	t.Helper()
	r := Request{RequestID: 9, Flags: flags, Model: "m"}
	for _, name := range names {
		r.Inputs = append(r.Inputs, Tensor{Name: name, DType: INT32, NDim: 1, Shape: [MaxNDim]uint64{4}})
	}
	end, err := Layout(r.Inputs, RequestPayloadSize(uint32(len(names)), 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	area := make([]byte, end)
	for i := range r.Inputs {
		d := &r.Inputs[i]
		for k := uint64(0); k < d.DataSize; k++ {
			area[d.DataOffset+k] = byte(i + 1)
		}
	}
	if err := EncodeRequest(area, &r); err != nil {
		t.Fatal(err)
	}
	return area
}

// Section 8: with FDN_FLAG_DATA_CRC, inputs over max_request_bytes are TOO_LARGE (step 8) before
// the data's CRC is looked at (step 9), here wrong.
func TestARequestOverMaxBytesIsTooLargeBeforeItsDataCRCIsChecked(t *testing.T) {
	area := requestWithData(t, FlagDataCRC, "a")
	var r Request
	if err := DecodeRequest(area, DefaultLimits, &r); err != nil {
		t.Fatalf("the request as encoded: %v", err)
	}
	area[r.Inputs[0].DataOffset] ^= 1 // a data byte: only the data CRC covers it
	if err := DecodeRequest(area, DefaultLimits, &r); CodeOf(err) != BadChecksum {
		t.Fatalf("a data byte changed: got %v, want BAD_CHECKSUM", err)
	}
	lim := Limits{MaxTensors: MaxTensors, MaxBytes: 15}
	err := DecodeRequest(area, lim, &r)
	if want := "TOO_LARGE: 16 bytes of inputs (at most 15)"; err == nil || err.Error() != want {
		t.Fatalf("16 bytes of inputs over a limit of 15, their data CRC wrong: got %v, want %q", err, want)
	}
}

// Section 8 step 7: an input name given twice is INVALID_INPUT, naming it and the request.
func TestARequestNamingAnInputTwiceIsRefusedNamingIt(t *testing.T) {
	var r Request
	err := DecodeRequest(requestWithData(t, 0, "a", "b", "a"), DefaultLimits, &r)
	e, ok := err.(*Error)
	if !ok || e.Code != InvalidInput || e.Message != `input "a" appears twice` || e.RequestID != 9 {
		t.Fatalf("got %#v, want INVALID_INPUT %q of request 9", err, `input "a" appears twice`)
	}
}
