// Command pool serves the demo model to an HTTP handler's goroutines through a pool of clients,
// each call bounded by its request's context (docs/clients.md shows this file; the tests run
// it). Usage: pool SERVER
package main

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"

	"foundation/clients/go/fdn"
)

// predict answers y[0] of the demo model for a request: the call waits for a free client of the
// pool, and is abandoned when the request's context ends (the client went away, a timeout).
func predict(pool *fdn.Pool, x []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		in := []fdn.Input{{Name: "x", DType: fdn.FP32, Shape: []uint64{1, 784}, Data: x}}
		res, err := pool.Infer(r.Context(), "demo", in) // outputs copied: ours to keep
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "%.6f", res.Output("y").Float32s()[0])
	}
}

func main() {
	server := "demo_srv"
	if len(os.Args) > 1 {
		server = os.Args[1]
	}
	pool, err := fdn.NewPool(server, fdn.Options{}, 4) // up to 4 clients, connected as needed
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer pool.Close()
	x := make([]byte, 4*784)
	for i := 0; i < 784; i++ {
		binary.LittleEndian.PutUint32(x[4*i:], math.Float32bits(float32(i)/784))
	}
	handler := predict(pool, x)

	// 64 requests at once, as an HTTP server's goroutines would make them
	answers := make([]string, 64)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			rec := httptest.NewRecorder()
			handler(rec, httptest.NewRequest("GET", "/predict", nil))
			answers[i] = fmt.Sprintf("%d %s", rec.Code, rec.Body)
		}(i)
	}
	wg.Wait()
	same := 0
	for _, a := range answers {
		if a == answers[0] {
			same++
		}
	}
	fmt.Printf("%d of %d answers: %s\n", same, len(answers), answers[0])
}
