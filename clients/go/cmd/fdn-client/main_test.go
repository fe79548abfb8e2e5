package main

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"foundation/clients/go/fdn"
)

func TestAShapeWhoseBytesPass2To64IsRefusedNotWrapped(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// 2^63 x 2 bytes wraps to 0, which an empty file would match
	_, err := parseInput("x:UINT8:9223372036854775808,2:" + empty)
	if err == nil || !strings.Contains(err.Error(), "more than 2^64 bytes") {
		t.Fatalf("got %v", err)
	}
}

func TestAHugeTimeoutIsTheLongestNotAWrap(t *testing.T) {
	a, code := parse([]string{"--name", "s", "--model", "m", "--timeout-ms", "9223372036854775807"})
	if a == nil || a.timeout != math.MaxInt64 {
		t.Fatalf("code %d, args %+v", code, a)
	}
}

func TestACudaOutputIsAnErrorNotAPanic(t *testing.T) {
	r := &fdn.Result{Outputs: []fdn.Tensor{{Name: "y", DType: fdn.FP32, NDim: 1, Shape: [8]uint64{1},
		DataSize: 4, Location: fdn.LocationCudaIPC}}}
	if code := printResult(r); code != exitError {
		t.Fatalf("exit %d", code)
	}
}

// An output holding NaN or an infinity prints as Python's json writes it (and reads it back):
// encoding/json refused the line, and the driver printed an empty one with exit status 0.
func TestNaNAndInfinitiesArePrintedAsPythonsJSONWritesThem(t *testing.T) {
	data := make([]byte, 16)
	for i, f := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1.5} {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(f))
	}
	r := &fdn.Result{Outputs: []fdn.Tensor{{Name: "y", DType: fdn.FP32, NDim: 1, Shape: [8]uint64{4},
		DataSize: 16, Data: data}}}
	var out bytes.Buffer
	stdout = &out
	defer func() { stdout = os.Stdout }()
	if code := printResult(r); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	want := `{"ok":true,"outputs":{"y":{"data":[NaN,Infinity,-Infinity,1.5],"datatype":"FP32","shape":[4]}}}` + "\n"
	if out.String() != want {
		t.Fatalf("printed %q, want %q", out.String(), want)
	}
}
