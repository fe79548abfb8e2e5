package fdn

import (
	"fmt"
	"math"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// wantError fails unless err is an *Error of code whose message holds every one of parts.
func wantError(t *testing.T, what string, err error, code Status, parts ...string) {
	t.Helper()
	e, ok := err.(*Error)
	if !ok || e.Code != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
	for _, p := range parts {
		if !strings.Contains(e.Message, p) {
			t.Fatalf("%s: %q does not say %q", what, e.Message, p)
		}
	}
}

// noPanic runs f, turning a panic into a test failure that names what.
func noPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("%s panicked: %v", what, r)
		}
	}()
	f()
}

func TestLayoutNamesTheTensorAndItsFaultAndNeverSlicesPastTheShape(t *testing.T) {
	cases := []struct {
		tensor Tensor
		says   string
	}{
		{Tensor{Name: "a", DType: FP32, NDim: 9}, "9 dimensions (at most 8)"},
		{Tensor{Name: "a", DType: FP32, NDim: math.MaxUint32}, "4294967295 dimensions"},
		{Tensor{Name: "a", DType: 0, NDim: 1}, "unknown dtype code 0"},
		{Tensor{Name: "a", DType: 99, NDim: 1}, "unknown dtype code 99"},
		{Tensor{Name: "a", DType: FP32, NDim: 2, Shape: [8]uint64{1 << 62, 8}}, "more than 2^64 bytes"},
		{Tensor{Name: "a", DType: UINT8, NDim: 1, Shape: [8]uint64{math.MaxUint64 - 100}}, "beyond 2^63 - 1 bytes"},
		// empty, but no array library could hold it: every decoder refuses it (section 8 step 7)
		{Tensor{Name: "a", DType: UINT8, NDim: 3, Shape: [8]uint64{1 << 62, 2, 0}}, "shape [4611686018427387904 2 0] of UINT8 is beyond 2^63 - 1"},
		{Tensor{Name: "a", DType: UINT8, NDim: 2, Shape: [8]uint64{0, 1 << 63}}, "is beyond 2^63 - 1"},
	}
	for _, c := range cases {
		ts := []Tensor{{Name: "ok", DType: UINT8, NDim: 1, Shape: [8]uint64{1}}, c.tensor}
		noPanic(t, c.says, func() {
			_, err := Layout(ts, BodySize)
			wantError(t, c.says, err, InvalidInput, `tensor 1 ("a")`, c.says)
		})
	}
	half := Tensor{Name: "a", DType: UINT8, NDim: 1, Shape: [8]uint64{math.MaxInt64}} // the largest that passes
	_, err := Layout([]Tensor{half, half}, BodySize)
	wantError(t, "two halves of 2^64", err, InvalidInput, `tensor 1 ("a")`, "end past 2^64")
}

// A tensor built by hand with NDim over MaxNDim has no shape: Dims says so (nil) instead of
// slicing past Shape, and the encoders refuse it, as they refuse any descriptor a decoder would.
func TestHandBuiltTensorsNeverPanicAndAreRefusedByName(t *testing.T) {
	for _, n := range []uint32{9, 100, math.MaxUint32} {
		x := Tensor{Name: "x", DType: FP32, NDim: n}
		noPanic(t, fmt.Sprint("Dims of NDim ", n), func() {
			if d := x.Dims(); d != nil {
				t.Fatalf("NDim %d: Dims() = %v", n, d)
			}
		})
	}
	var none *Tensor
	if none.Dims() != nil {
		t.Fatal("Dims of a nil tensor")
	}
	if d := (&Tensor{DType: FP32}).Dims(); d == nil || len(d) != 0 {
		t.Fatalf("a scalar's Dims is %#v, want empty", d)
	}
	good := Tensor{Name: "ok", DType: UINT8, NDim: 1, Shape: [8]uint64{1}, DataOffset: 512, DataSize: 1}
	bad := []struct {
		set  func(x *Tensor)
		says string
	}{
		{func(x *Tensor) { x.NDim = 9 }, "9 dimensions (at most 8)"},
		{func(x *Tensor) { x.NDim = math.MaxUint32 }, "4294967295 dimensions"},
		{func(x *Tensor) { x.Location = 7 }, "location 7"},
		{func(x *Tensor) { x.DType = 0 }, "unknown dtype code 0"},
		{func(x *Tensor) { x.DataSize = 3 }, "DataSize 3, but its shape [1] of UINT8 takes 1 bytes"},
		{func(x *Tensor) { x.NDim, x.Shape = 2, [8]uint64{1 << 62, 8} }, "shape [4611686018427387904 8] of UINT8 has more than 2^64 bytes"},
	}
	for _, b := range bad {
		x := good
		x.Name = "x"
		b.set(&x)
		area := make([]byte, 4096)
		noPanic(t, b.says, func() {
			err := EncodeRequest(area, &Request{RequestID: 3, Model: "m", Inputs: []Tensor{good, x}})
			wantError(t, "request: "+b.says, err, InvalidInput, `tensor 1 ("x")`, b.says)
			err = EncodeResponse(area, &Response{RequestID: 3, Model: "m", Outputs: []Tensor{good, x}})
			wantError(t, "response: "+b.says, err, InvalidInput, `tensor 1 ("x")`, b.says)
		})
	}
}

func TestPagesRefusesACapacityThatWrapsPast2To64(t *testing.T) {
	for _, n := range []uint64{math.MaxUint64, math.MaxUint64 - page + 2} {
		if _, ok := pages(n); ok {
			t.Fatalf("pages(%d) passed", n)
		}
	}
	for n, want := range map[uint64]uint64{0: page, 1: page, page: page, page + 1: 2 * page,
		math.MaxUint64 - page + 1: math.MaxUint64 - page + 1} {
		if got, ok := pages(n); !ok || got != want {
			t.Fatalf("pages(%d) = %d %v, want %d", n, got, ok, want)
		}
	}
}

func TestEncodingRefusesANameThatWouldBeCutOrIsNotUTF8(t *testing.T) {
	area := make([]byte, 1<<16)
	base := func() *Request {
		return &Request{RequestID: 7, Model: "m", Inputs: []Tensor{{Name: "x", DType: UINT8, NDim: 1, Shape: [8]uint64{1}}}}
	}
	bad := []struct {
		set  func(r *Request)
		says string
	}{
		{func(r *Request) { r.Model = "echo\x00evil" }, `model name "echo\x00evil" holds a NUL byte`},
		{func(r *Request) { r.Model = "\xff" }, "is not valid UTF-8"},
		{func(r *Request) { r.Model = strings.Repeat("é", 32) }, "is over 63 bytes"}, // 32 runes, 64 bytes
		{func(r *Request) { r.Version = "1\x002" }, "model version"},
		{func(r *Request) { r.Inputs[0].Name = "x\x00y" }, "tensor 0: name"},
		{func(r *Request) { r.Outputs = []string{"y", "\x00"} }, "requested output 1"},
	}
	for _, b := range bad {
		r := base()
		b.set(r)
		if _, err := Layout(r.Inputs, RequestPayloadSize(1, uint32(len(r.Outputs)), 0)); err != nil {
			t.Fatal(err)
		}
		wantError(t, b.says, EncodeRequest(area, r), InvalidInput, b.says)
	}
	r := base()
	r.Model = strings.Repeat("é", 31) + "a" // 63 bytes: fits
	if _, err := Layout(r.Inputs, RequestPayloadSize(1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	if err := EncodeRequest(area, r); err != nil {
		t.Fatal(err)
	}
	r.Params = make([]byte, MaxParams+1)
	wantError(t, "params", EncodeRequest(make([]byte, 2<<20), r), TooLarge, "params of 1048577 bytes")
	wantError(t, "response", EncodeResponse(area, &Response{Model: "a\x00"}), InvalidInput, "holds a NUL byte")
}

func TestNilArgumentsAreErrorsNotPanics(t *testing.T) {
	var c *Client
	noPanic(t, "nil client", func() {
		_, err := c.Infer("m", nil, time.Second)
		wantError(t, "Infer", err, InvalidInput, "the client is nil")
		_, err = c.InferCall("m", nil, time.Second, Call{})
		wantError(t, "InferCall", err, InvalidInput, "the client is nil")
		wantError(t, "LoanBegin", c.LoanBegin("m", nil), InvalidInput, "the client is nil")
		_, err = c.LoanInfer(time.Second)
		wantError(t, "LoanInfer", err, InvalidInput, "the client is nil")
		wantError(t, "Close", c.Close(), InvalidInput, "the client is nil")
		if c.LoanData(0) != nil {
			t.Fatal("LoanData of a nil client")
		}
	})
	noPanic(t, "nil result and tensor", func() {
		var r *Result
		var x *Tensor
		if r.Output("y") != nil || x.Float32s() != nil {
			t.Fatal("a nil result or tensor has data")
		}
	})
	noPanic(t, "nil codec targets", func() {
		area := make([]byte, 4096)
		wantError(t, "EncodeRequest", EncodeRequest(area, nil), InvalidInput, "nil")
		wantError(t, "EncodeResponse", EncodeResponse(area, nil), InvalidInput, "nil")
		wantError(t, "DecodeRequest", DecodeRequest(area, DefaultLimits, nil), InvalidInput, "nil")
		wantError(t, "DecodeResponse", DecodeResponse(area, DefaultLimits, nil), InvalidInput, "nil")
	})
}

// fakeRegion writes a READY region of this process (so the liveness check passes) whose
// channels_offset is off, and removes it when the test ends.
func fakeRegion(t *testing.T, name string, off uint64) {
	t.Helper()
	ctl := make([]byte, page)
	le.PutUint32(ctl[rMagic:], RegionMagic)
	le.PutUint16(ctl[rVersionMajor:], ProtocolVersion)
	le.PutUint32(ctl[rState:], stateReady)
	le.PutUint32(ctl[rServerPid:], uint32(os.Getpid()))
	started, err := startTime(uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	le.PutUint64(ctl[rServerStart:], started)
	le.PutUint32(ctl[rChannelCount:], 1)
	le.PutUint32(ctl[rChannelSize:], ChanSize)
	le.PutUint64(ctl[rChannelsOffset:], off)
	path := "/dev/shm/fdn-" + name
	if err := os.WriteFile(path, ctl, 0o600); err != nil {
		t.Skip("no /dev/shm:", err)
	}
	t.Cleanup(func() { os.Remove(path) })
}

func TestConnectRefusesChannelsOutsideTheRegion(t *testing.T) {
	for _, off := range []uint64{math.MaxUint64 - 127, 1 << 63, page, RegionSize + 4, 0} {
		name := fmt.Sprintf("fdngofake%d", os.Getpid())
		fakeRegion(t, name, off)
		noPanic(t, fmt.Sprint("channels_offset ", off), func() {
			_, err := Connect(name, Options{})
			wantError(t, fmt.Sprint("channels_offset ", off), err, Internal, fmt.Sprintf("channels_offset %d", off))
		})
		os.Remove("/dev/shm/fdn-" + name)
	}
}

func TestLiveArgumentsAreCheckedBeforeAnythingIsSent(t *testing.T) {
	srv := startEcho(t, "fdngoarg")
	_, err := Connect(srv.name, Options{Capacity: math.MaxUint64})
	wantError(t, "Capacity 2^64-1", err, InvalidInput, "Options.Capacity (18446744073709551615 bytes) exceeds Options.MaxResponseBytes")
	c := srv.connect(Options{})
	x := []Input{{Name: "x", DType: UINT8, Shape: []uint64{1}, Data: []byte{1}}}
	bigParams := []byte(`{"a":"` + strings.Repeat("a", MaxParams) + `"}`)
	bad := []struct {
		model  string
		inputs []Input
		call   Call
		code   Status
		says   string
	}{
		{"echo\x00x", x, Call{}, InvalidInput, "model name"}, // the echo model would answer
		{"ec\xffho", x, Call{}, InvalidInput, "is not valid UTF-8"},
		{"echo", []Input{{Name: "x\x00", DType: UINT8, Shape: []uint64{1}, Data: []byte{1}}}, Call{}, InvalidInput, "input 0: name"},
		{"echo", x, Call{Version: "1\x00"}, InvalidInput, "model version"},
		{"echo", x, Call{Outputs: []string{"x\x00"}}, InvalidInput, "requested output 0"},
		{"echo", x, Call{Params: bigParams}, TooLarge, "params of 1048584 bytes"},
		{"echo", []Input{{Name: "x", DType: UINT8, Shape: make([]uint64, 9)}}, Call{}, InvalidInput, `input 0 ("x"): 9 dimensions`},
		{"echo", []Input{{Name: "x", DType: FP32, Shape: []uint64{2}, Data: []byte{1}}}, Call{}, InvalidInput, "1 bytes of data"},
	}
	for _, b := range bad {
		_, err := c.InferCall(b.model, b.inputs, time.Second, b.call)
		wantError(t, b.says, err, b.code, b.says)
		if err.(*Error).RequestID != 0 {
			t.Fatalf("%s: refused by the server, not before sending", b.says)
		}
	}
	if r, err := c.Infer("echo", x, 30*time.Second); err != nil || r.Output("x") == nil {
		t.Fatalf("after the refusals: %v", err)
	}
}

func TestLiveAFailedLoanBeginLeavesNoLoan(t *testing.T) {
	c, _ := liveClient(t, "fdngoloan")
	good := []Tensor{{Name: "x", DType: FP32, NDim: 1, Shape: [8]uint64{4}}}
	long := strings.Repeat("n", 70)
	failing := []struct {
		model string
		specs []Tensor
		code  Status
		says  string
	}{
		{"echo", []Tensor{{Name: "x", DType: FP32, NDim: 9}}, InvalidInput, "9 dimensions"},
		{"echo", []Tensor{{Name: "y", DType: FP32, NDim: 1, Shape: [8]uint64{1 << 50}}}, TooLarge, "exceeds the server's"},
		{long, good, InvalidInput, "is over 63 bytes"},
		{"echo", []Tensor{{Name: long, DType: FP32, NDim: 1}}, InvalidInput, "tensor 0: name"},
		{"echo", []Tensor{{Name: "x", DType: FP32, NDim: 1, Location: LocationCudaIPC}}, CudaUnavailable, `tensor 0 ("x")`},
		{"echo", []Tensor{{Name: "x", DType: UINT8, NDim: 2, Shape: [8]uint64{0, 1 << 63}}}, InvalidInput, `tensor 0 ("x"): shape [0 9223372036854775808] of UINT8 is beyond 2^63 - 1`},
	}
	for _, f := range failing {
		if err := c.LoanBegin("echo", good); err != nil {
			t.Fatal(err)
		}
		noPanic(t, f.says, func() {
			wantError(t, f.says, c.LoanBegin(f.model, f.specs), f.code, f.says)
			if d := c.LoanData(0); d != nil {
				t.Fatalf("%s: the old loan is still on (%d bytes)", f.says, len(d))
			}
			_, err := c.LoanInfer(time.Second)
			wantError(t, f.says, err, InvalidInput, "no loan")
		})
	}
	if err := c.LoanBegin("echo", good); err != nil {
		t.Fatal(err)
	}
	copy(c.LoanData(0), []byte{1, 2, 3, 4})
	if r, err := c.LoanInfer(30 * time.Second); err != nil || r.Output("x").Data[0] != 1 {
		t.Fatalf("a loan after the failures: %v", err)
	}
}

// A LoanInfer that fails while its request is still with the server (the server may still be
// reading the inputs) ends the loan: LoanData handed out the request area at once, and writing
// it changed the inputs under the server's read. The server is stopped (SIGSTOP) to hold the
// request as long as the test needs, with no sleep to race against.
func TestLiveALoanWhoseRequestIsStillWithTheServerLendsItsInputsNoMore(t *testing.T) {
	srv := startEcho(t, "fdngolate")
	defer srv.cmd.Process.Signal(syscall.SIGCONT) // before the cleanup kills it, whatever fails
	c := srv.connect(Options{ConnectTimeoutMs: 20})
	spec := []Tensor{{Name: "x", DType: UINT8, NDim: 1, Shape: [8]uint64{4}}}
	if err := c.LoanBegin("echo", spec); err != nil {
		t.Fatal(err)
	}
	copy(c.LoanData(0), []byte{1, 1, 1, 1})
	if r, err := c.LoanInfer(5 * time.Second); err != nil || r.Output("x").Data[0] != 1 {
		t.Fatalf("the first loan call: %v", err)
	}
	srv.cmd.Process.Signal(syscall.SIGSTOP)
	var ws syscall.WaitStatus // the signal is asynchronous: wait until the server has stopped
	if pid, err := syscall.Wait4(srv.cmd.Process.Pid, &ws, syscall.WUNTRACED, nil); err != nil || pid != srv.cmd.Process.Pid || !ws.Stopped() {
		t.Fatalf("the server did not stop: %v %v", err, ws)
	}
	_, err := c.LoanInfer(20 * time.Millisecond)
	wantError(t, "a stopped server", err, DeadlineExceeded)
	rid := err.(*Error).RequestID
	if d := c.LoanData(0); d != nil {
		t.Fatalf("LoanData lends %d bytes the server may still be reading", len(d))
	}
	_, err = c.LoanInfer(5 * time.Second)
	wantError(t, "LoanInfer on the ended loan", err, InvalidInput,
		fmt.Sprintf("no loan: it ended when its request %d failed while still with the server", rid))
	err = c.LoanBegin("echo", spec) // waits ConnectTimeoutMs for the stopped server
	wantError(t, "LoanBegin while the server holds the request", err, DeadlineExceeded, "is still with the server")
	resume(t, srv, c)
	x := []Input{{Name: "x", DType: UINT8, Shape: []uint64{1}, Data: []byte{7}}}
	if r, err := c.Infer("echo", x, 5*time.Second); err != nil || r.Output("x").Data[0] != 7 {
		t.Fatalf("the call after the late answer: %v", err) // it waits for that answer first
	}
	if err := c.LoanBegin("echo", spec); err != nil {
		t.Fatal(err)
	}
	copy(c.LoanData(0), []byte{2, 2, 2, 2})
	if r, err := c.LoanInfer(5 * time.Second); err != nil || r.Output("x").Data[0] != 2 {
		t.Fatalf("a new loan: %v", err)
	}
}
