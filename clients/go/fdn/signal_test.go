package fdn

import (
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// A signal handled in the thread asleep in a semaphore wait (the Go runtime handles every signal
// it is told to notify; the kernel gives a process's signal to any thread) ended the wait with
// EINTR as if it had timed out: Close, waiting up to ConnectTimeoutMs for a busy region mutex,
// gave its channel back without it at the first SIGTERM a service got. The wait now goes on to
// its deadline. The signals are sent to the waiting thread itself (tgkill), many times.
func TestASemaphoreWaitGoesOnThroughSignals(t *testing.T) {
	srv := startEcho(t, "fdngosignal")
	o := srv.connect(Options{})
	release := holdRegionMutex(t, o)
	notified := make(chan os.Signal, 64)
	signal.Notify(notified, syscall.SIGUSR1) // handled by the runtime, not the default (exit)
	defer signal.Stop(notified)

	tids := make(chan int, 1)
	took := make(chan bool, 1)
	go func() {
		runtime.LockOSThread() // the wait runs in this thread: the one signalled
		defer runtime.UnlockOSThread()
		tids <- syscall.Gettid()
		took <- semWait(o.mutex, int64(5*time.Second))
	}()
	tid := <-tids
	for i := 0; i < 30; i++ {
		time.Sleep(10 * time.Millisecond)
		if err := syscall.Tgkill(os.Getpid(), tid, syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case ok := <-took:
		t.Fatalf("the wait ended (took=%v) while the mutex was still held: a signal ended it", ok)
	default:
	}
	release()
	if !<-took {
		t.Fatal("the wait did not take the mutex once it was released")
	}
	semPost(o.mutex) // give back what the wait took
}
