// Command fdn-client is the example program of the Go client, and the driver the tests and the
// benchmark run (docs/clients.md, "The fdn-client driver"):
//
//	fdn-client infer --name SERVER --model MODEL [--input NAME:DTYPE:DIM,DIM,...:FILE]... [--timeout-ms T] [--loan]
//	                 [--hold connected|answered|again|loaned]
//	fdn-client bench --name SERVER --model MODEL --input ... [--iterations N] [--warmup W]
//	fdn-client vectors DIR
package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"foundation/clients/go/fdn"
)

const (
	exitOK          = 0
	exitUsage       = 2
	exitError       = 3
	exitUnavailable = 4
)

type args struct {
	name, model        string
	inputs             []fdn.Input
	timeout            time.Duration
	loan               bool
	iterations, warmup int
	spinUs             uint32
	params             []byte // --params JSON (an extension of the driver contract)
	hold               string // --hold STAGE: stop there until stdin closes (the crash tests kill it)
}

func usage(why string) int {
	fmt.Fprintf(os.Stderr, "fdn-client: %s\nusage: fdn-client infer|bench --name SERVER --model MODEL "+
		"[--input NAME:DTYPE:DIMS:FILE]... [--timeout-ms T] [--loan] [--iterations N] [--warmup W] [--spin-us US] [--params JSON]\n"+
		"       [--hold connected|answered|again|loaned]\n"+
		"       fdn-client vectors DIR\n", why)
	return exitUsage
}

// parseInput reads NAME:DTYPE:DIM,DIM,...:FILE (DIMS empty for a scalar).
func parseInput(spec string) (fdn.Input, error) {
	parts := strings.SplitN(spec, ":", 4)
	if len(parts) != 4 {
		return fdn.Input{}, fmt.Errorf("--input wants NAME:DTYPE:DIMS:FILE")
	}
	in := fdn.Input{Name: parts[0], DType: fdn.DTypeFromName(parts[1]), Shape: []uint64{}}
	if in.DType == 0 {
		return in, fmt.Errorf("unknown dtype %q", parts[1])
	}
	size := in.DType.ItemSize()
	if parts[2] != "" {
		for _, d := range strings.Split(parts[2], ",") {
			n, err := strconv.ParseUint(d, 10, 64)
			if err != nil {
				return in, fmt.Errorf("bad dims %q", parts[2])
			}
			in.Shape = append(in.Shape, n)
			if n != 0 && size > math.MaxUint64/n { // a wrapped size could match a short file
				return in, fmt.Errorf("shape %s of %s has more than 2^64 bytes", parts[2], parts[1])
			}
			size *= n
		}
	}
	data, err := os.ReadFile(parts[3])
	if err != nil {
		return in, err
	}
	if uint64(len(data)) != size {
		return in, fmt.Errorf("%s has %d bytes, %s%v needs %d", parts[3], len(data), parts[1], in.Shape, size)
	}
	in.Data = data
	return in, nil
}

func parse(argv []string) (*args, int) {
	knownOption := map[string]bool{"--name": true, "--model": true, "--timeout-ms": true, "--iterations": true,
		"--warmup": true, "--spin-us": true, "--params": true, "--input": true, "--hold": true}
	a := &args{timeout: -1, iterations: 1000, warmup: 100, spinUs: 100}
	for i := 0; i < len(argv); i++ {
		k := argv[i]
		if k == "--loan" {
			a.loan = true
			continue
		}
		if !strings.HasPrefix(k, "--") || !knownOption[k] {
			return nil, usage("unknown option " + k)
		}
		if i+1 >= len(argv) {
			return nil, usage("an option lacks its value")
		}
		i++
		v := argv[i]
		var err error
		var n int
		switch k {
		case "--name":
			a.name = v
		case "--model":
			a.model = v
		case "--timeout-ms":
			n, err = strconv.Atoi(v)
			if err == nil && n < -1 {
				return nil, usage("--timeout-ms takes an integer >= -1")
			}
			a.timeout = time.Duration(n) * time.Millisecond
			if n > math.MaxInt64/int(time.Millisecond) { // it would wrap, to no deadline or the past
				a.timeout = math.MaxInt64
			}
		case "--iterations":
			a.iterations, err = strconv.Atoi(v)
		case "--warmup":
			a.warmup, err = strconv.Atoi(v)
		case "--spin-us":
			n, err = strconv.Atoi(v)
			if err == nil && (n < 0 || n > 1000000) {
				return nil, usage("--spin-us takes an integer 0..1000000")
			}
			a.spinUs = uint32(n)
		case "--params":
			a.params = []byte(v)
		case "--hold":
			if v != "connected" && v != "answered" && v != "again" && v != "loaned" {
				return nil, usage("--hold takes connected, answered, again or loaned")
			}
			a.hold = v
		case "--input":
			var in fdn.Input
			in, err = parseInput(v)
			a.inputs = append(a.inputs, in)
		default:
			return nil, usage("unknown option " + k)
		}
		if err != nil {
			return nil, usage(err.Error())
		}
	}
	if a.name == "" || a.model == "" {
		return nil, usage("--name and --model are required")
	}
	if a.loan && a.params != nil {
		return nil, usage("--params cannot go with --loan (a loan carries no parameters)")
	}
	if a.iterations < 1 || a.warmup < 0 {
		return nil, usage("bad --iterations or --warmup")
	}
	if a.hold == "loaned" && !a.loan {
		return nil, usage("--hold loaned needs --loan")
	}
	return a, 0
}

var stdout io.Writer = os.Stdout // (a test reads what is printed)

// printJSON prints v as one line of JSON. Its numbers are written as Python's json writes them,
// NaN and the infinities included (encoding/json refuses those, whatever a MarshalJSON returns:
// an output holding one printed an empty line, exit status 0).
func printJSON(v interface{}) {
	raw, err := appendJSON(nil, v)
	if err != nil { // (not one of the values this driver prints)
		raw = []byte(fmt.Sprintf(`{"ok": false, "code": %d, "error": "INTERNAL", "message": %q}`, fdn.Internal, err.Error()))
	}
	stdout.Write(append(raw, '\n'))
}

// appendJSON appends v as JSON: a map with its keys sorted, as encoding/json writes one.
func appendJSON(buf []byte, v interface{}) ([]byte, error) {
	switch x := v.(type) {
	case number:
		return append(buf, x.text()...), nil
	case []interface{}:
		buf = append(buf, '[')
		for i, e := range x {
			if i > 0 {
				buf = append(buf, ',')
			}
			var err error
			if buf, err = appendJSON(buf, e); err != nil {
				return nil, err
			}
		}
		return append(buf, ']'), nil
	case map[string]interface{}:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		buf = append(buf, '{')
		for i, k := range keys {
			if i > 0 {
				buf = append(buf, ',')
			}
			name, _ := json.Marshal(k)
			buf = append(append(buf, name...), ':')
			var err error
			if buf, err = appendJSON(buf, x[k]); err != nil {
				return nil, err
			}
		}
		return append(buf, '}'), nil
	}
	raw, err := json.Marshal(v)
	return append(buf, raw...), err
}

func failed(err error) int {
	e, ok := err.(*fdn.Error)
	if !ok {
		e = &fdn.Error{Code: fdn.Internal, Message: err.Error()}
	}
	printJSON(map[string]interface{}{"ok": false, "code": uint32(e.Code), "error": e.Code.String(), "message": e.Message})
	if e.Code == fdn.ServerUnavailable {
		return exitUnavailable
	}
	return exitError
}

func half(h uint16) float64 {
	e, m := int(h>>10)&0x1F, float64(h&0x3FF)
	var v float64
	switch e {
	case 0:
		v = math.Ldexp(m, -24)
	case 31:
		v = math.Inf(1)
		if m != 0 {
			v = math.NaN()
		}
	default:
		v = math.Ldexp(m+1024, e-25)
	}
	if h&0x8000 != 0 {
		v = -v
	}
	return v
}

// number is a float written as Python's json writes it: NaN, Infinity and -Infinity too.
type number float64

func (n number) text() string {
	f := float64(n)
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func values(t *fdn.Tensor) []interface{} {
	le := binary.LittleEndian
	n := int(t.DataSize / t.DType.ItemSize())
	out := make([]interface{}, n)
	for i := 0; i < n; i++ {
		p := t.Data[uint64(i)*t.DType.ItemSize():]
		switch t.DType {
		case fdn.BOOL:
			out[i] = p[0] != 0
		case fdn.UINT8, fdn.BYTES:
			out[i] = p[0]
		case fdn.INT8:
			out[i] = int8(p[0])
		case fdn.UINT16:
			out[i] = le.Uint16(p)
		case fdn.INT16:
			out[i] = int16(le.Uint16(p))
		case fdn.UINT32:
			out[i] = le.Uint32(p)
		case fdn.INT32:
			out[i] = int32(le.Uint32(p))
		case fdn.UINT64:
			out[i] = le.Uint64(p)
		case fdn.INT64:
			out[i] = int64(le.Uint64(p))
		case fdn.FP16:
			out[i] = number(half(le.Uint16(p)))
		case fdn.BF16:
			out[i] = number(math.Float32frombits(uint32(le.Uint16(p)) << 16))
		case fdn.FP32:
			out[i] = number(math.Float32frombits(le.Uint32(p)))
		default:
			out[i] = number(math.Float64frombits(le.Uint64(p)))
		}
	}
	return out
}

func printResult(r *fdn.Result) int {
	outputs := map[string]interface{}{}
	for i := range r.Outputs {
		t := &r.Outputs[i]
		if t.Location != fdn.LocationHost { // no bytes here to print (its Data is nil)
			return failed(&fdn.Error{Code: fdn.CudaUnavailable, RequestID: r.RequestID,
				Message: fmt.Sprintf("output %q is a CUDA_IPC tensor; this driver prints host tensors only", t.Name)})
		}
		outputs[t.Name] = map[string]interface{}{"datatype": t.DType.String(), "shape": t.Dims(), "data": values(t)}
	}
	printJSON(map[string]interface{}{"ok": true, "outputs": outputs})
	return exitOK
}

// hold, at the stage --hold names, says so on stderr and waits for stdin to close (a test kills the
// process meanwhile: the client is then idle on its channel, or its loan written and not sent).
// again: once the first call is answered; the same call is then made again, and its answer printed.
func hold(a *args, stage string) {
	if a.hold != stage {
		return
	}
	fmt.Fprintf(os.Stderr, "held %s\n", stage)
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// call makes one call: a copy of the inputs (Infer), or a loan written in place.
func call(c *fdn.Client, a *args, loaned bool) (*fdn.Result, error) {
	if !a.loan {
		return c.InferCall(a.model, a.inputs, a.timeout, fdn.Call{Params: a.params})
	}
	if !loaned {
		specs := make([]fdn.Tensor, len(a.inputs))
		for i, in := range a.inputs {
			specs[i] = fdn.Tensor{Name: in.Name, DType: in.DType, NDim: uint32(len(in.Shape))}
			copy(specs[i].Shape[:], in.Shape)
		}
		if err := c.LoanBegin(a.model, specs); err != nil {
			return nil, err
		}
	}
	for i, in := range a.inputs { // write the inputs straight into shared memory
		copy(c.LoanData(i), in.Data)
	}
	hold(a, "loaned")
	return c.LoanInfer(a.timeout)
}

func run(a *args, bench bool) int {
	spin := a.spinUs
	if spin == 0 {
		spin = fdn.NoSpin // --spin-us 0: block at once, as in C
	}
	c, err := fdn.Connect(a.name, fdn.Options{SpinUs: spin})
	if err != nil {
		return failed(err)
	}
	defer c.Close()
	if !bench {
		hold(a, "connected")
		r, err := call(c, a, false)
		if err != nil {
			return failed(err)
		}
		hold(a, "answered")
		if a.hold == "again" { // idle on its channel between two calls (the restart tests)
			hold(a, "again")
			if r, err = call(c, a, true); err != nil {
				return failed(err)
			}
		}
		return printResult(r)
	}
	for i := 0; i < a.warmup; i++ {
		if _, err := call(c, a, i > 0); err != nil {
			return failed(err)
		}
	}
	lat := make([]float64, a.iterations)
	start := time.Now()
	for i := range lat {
		t0 := time.Now()
		if _, err := call(c, a, i > 0 || a.warmup > 0); err != nil {
			return failed(err)
		}
		lat[i] = float64(time.Since(t0).Nanoseconds()) / 1e3
	}
	total := time.Since(start).Seconds()
	sort.Float64s(lat)
	n := len(lat)
	at := func(q float64) float64 { return lat[int(q*float64(n-1)+0.5)] }
	printJSON(map[string]interface{}{"p50_us": at(0.50), "p99_us": at(0.99), "rps": float64(n) / total, "iterations": n})
	return exitOK
}

func main() {
	if len(os.Args) < 2 {
		os.Exit(usage("no command"))
	}
	switch os.Args[1] {
	case "vectors":
		if len(os.Args) != 3 {
			os.Exit(usage("vectors wants a directory"))
		}
		passed, failures, err := fdn.CheckVectors(os.Args[2])
		if err != nil {
			os.Exit(usage(err.Error()))
		}
		printJSON(map[string]interface{}{"passed": passed, "failed": len(failures), "failures": failures})
		if len(failures) > 0 {
			os.Exit(1)
		}
	case "infer", "bench":
		a, code := parse(os.Args[2:])
		if a == nil {
			os.Exit(code)
		}
		if a.hold != "" && os.Args[1] == "bench" {
			os.Exit(usage("--hold goes with infer"))
		}
		os.Exit(run(a, os.Args[1] == "bench"))
	default:
		os.Exit(usage("unknown command " + os.Args[1]))
	}
}
