//go:build !race

// The flip test races on purpose (a goroutine rewrites the area while this one copies it, as a
// server process may): the race detector would report that race, not a bug, so `go test -race`
// leaves this file out; `go test` runs it.

package fdn

import (
	"bytes"
	"errors"
	"os"
	"sync/atomic"
	"testing"
)

const flipArea = 8192

// flipResponse encodes a response with the given outputs (1-D, their data from offset 4096 on,
// beyond the flipped bytes), text and params.
func flipResponse(t *testing.T, rid uint64, model string, names []string, dtypes []DType, dims []uint64,
	text, params string) ([]byte, *Response) {
	t.Helper()
	buf := make([]byte, flipArea)
	r := &Response{RequestID: rid, Model: model, Version: "1", Text: []byte(text), Params: []byte(params)}
	at := uint64(4096)
	for i := range names {
		ts := Tensor{Name: names[i], DType: dtypes[i], NDim: 1, DataOffset: at}
		ts.Shape[0] = dims[i]
		ts.DataSize = dims[i] * dtypes[i].ItemSize()
		at += (ts.DataSize + 63) &^ 63
		r.Outputs = append(r.Outputs, ts)
	}
	if err := EncodeResponse(buf, r); err != nil {
		t.Fatal(err)
	}
	if HeaderSize+ResponsePayloadSize(uint32(len(names)), uint32(len(text)), uint32(len(params))) > 2048 {
		t.Fatal("a flip response is longer than the flipped bytes")
	}
	return buf, r
}

// sameResponse reports whether got is want whole (descriptors, names, text, params).
func sameResponse(got, want *Response) bool {
	if got.RequestID != want.RequestID || got.Model != want.Model || got.Version != want.Version ||
		got.Status != want.Status || got.Flags != want.Flags || !bytes.Equal(got.Text, want.Text) ||
		!bytes.Equal(got.Params, want.Params) || len(got.Outputs) != len(want.Outputs) {
		return false
	}
	for i := range got.Outputs {
		g, w := &got.Outputs[i], &want.Outputs[i]
		if g.Name != w.Name || g.DType != w.DType || g.NDim != w.NDim || g.Shape != w.Shape ||
			g.DataOffset != w.DataOffset || g.DataSize != w.DataSize || uint64(len(g.Data)) != w.DataSize {
			return false
		}
	}
	return true
}

// flip decodes area n times while a goroutine rewrites its first 2048 bytes byte by byte
// (tearing anywhere) with a, b and a header whose payload_size points past the area; it returns
// how many decodes were a whole, b whole, a typed error, and neither (mixed).
func flip(t *testing.T, n int, direct bool) (na, nb, nerr, mixed int) {
	a, ra := flipResponse(t, 7, "m", []string{"y", "z"}, []DType{FP32, INT64}, []uint64{4, 3},
		"first", `{"k":1}`)
	b, rb := flipResponse(t, 8, "model-b", []string{"out"}, []DType{UINT8}, []uint64{100},
		"the second text", `{"other":"value","n":2}`)
	huge := append([]byte(nil), a...)
	le.PutUint32(huge[hPayloadSize:], 0xFFFFFF00)
	area := make([]byte, flipArea)
	copy(area, a)
	var stop int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for k := 0; atomic.LoadInt32(&stop) == 0; k++ {
			src := [3][]byte{a, b, huge}[k%3]
			for i := 0; i < 2048; i++ {
				area[i] = src[i]
			}
		}
	}()
	var snap []byte
	var got Response
	for i := 0; i < n; i++ {
		var err error
		if direct {
			err = DecodeResponse(area, DefaultLimits, &got)
		} else {
			snap = snapshotResponse(area, snap)
			err = decodeResponse(snap, area, DefaultLimits, &got)
		}
		var e *Error
		switch {
		case err != nil && errors.As(err, &e) && e.Code != OK:
			nerr++
		case err != nil:
			t.Fatalf("untyped error %v", err)
		case sameResponse(&got, ra):
			na++
		case sameResponse(&got, rb):
			nb++
		default:
			mixed++
		}
	}
	atomic.StoreInt32(&stop, 1)
	<-done
	return
}

// TestFlipSnapshot: decoding a copy of the area, as a client does, every decode is one of the
// two responses whole or a typed error, never a mix, and never reads past the area.
func TestFlipSnapshot(t *testing.T) {
	na, nb, nerr, mixed := flip(t, 300000, false)
	t.Logf("a %d, b %d, errors %d, mixed %d", na, nb, nerr, mixed)
	if mixed != 0 {
		t.Fatalf("%d decodes mixed the two responses", mixed)
	}
	if na == 0 || nb == 0 || nerr == 0 {
		t.Fatalf("the flip did not reach every case (a %d, b %d, errors %d)", na, nb, nerr)
	}
}

// TestFlipDirect (FDN_FLIP_DIRECT=1) decodes the area in place instead, as the client did before
// it copied: it shows the mixes the copy prevents (the count is logged, not checked).
func TestFlipDirect(t *testing.T) {
	if os.Getenv("FDN_FLIP_DIRECT") == "" {
		t.Skip("set FDN_FLIP_DIRECT=1 to show the in-place decode mixing versions")
	}
	na, nb, nerr, mixed := flip(t, 300000, true)
	t.Logf("in place: a %d, b %d, errors %d, mixed %d", na, nb, nerr, mixed)
}
