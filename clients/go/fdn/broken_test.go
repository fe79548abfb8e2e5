package fdn

// What no server may answer, against clients/tests/broken_server.py: a CUDA_IPC output to a
// request without FlagCudaIPC (spec 15.2) came back as an output with no Data and no error; a
// status this version does not define (section 9) gave the server's text alone, its code lost.
// Each fails the call INTERNAL saying why, and the client serves its next call. A handler's own
// SERVER_UNAVAILABLE is passed on as it is, as every client does.

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// startScript starts the Python server script (a path from clients/go/fdn) named prefix and the
// pid, stopped when the test ends; it skips the test without FDN_TEST_PYTHON.
func startScript(t *testing.T, prefix, script string) *echo {
	t.Helper()
	python := os.Getenv("FDN_TEST_PYTHON")
	if python == "" {
		t.Skip("set FDN_TEST_PYTHON to a Python with foundation_shm (the harness does)")
	}
	name := fmt.Sprintf("%s%d", prefix, os.Getpid())
	e := &echo{t: t, python: python, name: name}
	e.cmd = pythonServer(t, python, []string{script, name})
	t.Cleanup(func() {
		e.cmd.Process.Kill()
		e.cmd.Wait()
		removeObjects(name)
	})
	return e
}

func TestLiveWhatNoServerMayAnswerFailsInternalSayingWhy(t *testing.T) {
	srv := startScript(t, "fdngobrk", "../../tests/broken_server.py")
	c := srv.connect(Options{})
	in := []Input{{Name: "x", DType: INT32, Shape: []uint64{1}, Data: []byte{1, 0, 0, 0}}}
	for _, b := range []struct {
		model   string
		code    Status
		message string
	}{
		{"cuda_out", Internal, `output "y" came as a CUDA_IPC descriptor, which this client did not ask for`},
		{"unknown_status", Internal, "unknown error code 99: a status of a later version"},
		{"unavailable", ServerUnavailable, "a server this handler calls is gone"},
	} {
		t.Run(b.model, func(t *testing.T) {
			res, err := c.Infer(b.model, in, 10*time.Second)
			if err == nil {
				t.Fatalf("no error, outputs %+v", res.Outputs)
			}
			if e := callError(t, b.model, err, b.code, b.model, -1); e.Message != b.message {
				t.Errorf("%q, want %q", e.Message, b.message)
			}
			wantEcho(t, c, "the call after "+b.model)
		})
	}
}
