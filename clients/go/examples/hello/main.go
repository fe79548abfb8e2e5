// Command hello calls the demo model by copy, then by loan (docs/clients.md shows this file; the
// tests run it). Usage: hello SERVER
package main

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"time"

	"foundation/clients/go/fdn"
)

func main() {
	server := "demo_srv"
	if len(os.Args) > 1 {
		server = os.Args[1]
	}
	c, err := fdn.Connect(server, fdn.Options{}) // zero options: the defaults
	if err != nil {
		fmt.Fprintln(os.Stderr, err) // e.g. SERVER_UNAVAILABLE: no shm server named "demo_srv"
		os.Exit(1)
	}
	defer c.Close()
	x := make([]byte, 4*784)
	for i := 0; i < 784; i++ {
		binary.LittleEndian.PutUint32(x[4*i:], math.Float32bits(float32(i)/784))
	}
	in := []fdn.Input{{Name: "x", DType: fdn.FP32, Shape: []uint64{1, 784}, Data: x}}
	if res, err := c.Infer("demo", in, 500*time.Millisecond); err == nil { // < 0: no deadline
		y := res.Output("y") // a view: valid until the next call
		fmt.Printf("copy: y[0] = %.6f of %d\n", y.Float32s()[0], y.Dims()[1])
	} else {
		fmt.Println("copy failed:", err)
	}

	// A loan: the input is written straight into the shared request area.
	spec := []fdn.Tensor{{Name: "x", DType: fdn.FP32, NDim: 2, Shape: [8]uint64{1, 784}}}
	if err := c.LoanBegin("demo", spec); err == nil {
		copy(c.LoanData(0), x) // fetch it again after each call: the area may move
		if res, err := c.LoanInfer(500 * time.Millisecond); err == nil {
			fmt.Printf("loan: y[0] = %.6f\n", res.Output("y").Float32s()[0])
		} else {
			fmt.Println("loan failed:", err)
		}
	}

	_, err = c.Infer("no_such_model", in, 500*time.Millisecond) // errors: a code and the server's message
	fmt.Println("unknown model:", fdn.CodeOf(err))
}
