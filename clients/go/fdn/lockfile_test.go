package fdn

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// heldWithin runs lockFileHeld in a goroutine: a fifo's open would wait for a writer.
func heldWithin(t *testing.T, name string) bool {
	t.Helper()
	done := make(chan bool, 1)
	go func() { done <- lockFileHeld(name) }()
	select {
	case held := <-done:
		return held
	case <-time.After(10 * time.Second):
		t.Fatalf("lockFileHeld(%q) still waits after 10 s", name)
		return false
	}
}

// A held flock is "held", a free or missing file is not; a fifo or a symlink planted at the lock
// file's path is not asked (connect tells "another PID namespace" only on a real server's lock).
func TestLockFileHeldAsksOnlyARegularFile(t *testing.T) {
	base := "gotest_lk" + strconv.Itoa(os.Getpid())
	path := func(n string) string { return "/dev/shm/fdn-" + n + ".lock" }
	file, link, fifo := base+"f", base+"l", base+"p"
	for _, n := range []string{file, link, fifo} {
		defer os.Remove(path(n))
	}
	f, err := os.OpenFile(path(file), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if heldWithin(t, file) {
		t.Fatal("a lock file no one locks reads as held")
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if !heldWithin(t, file) {
		t.Fatal("a locked lock file reads as free")
	}
	if err := os.Symlink(path(file), path(link)); err != nil {
		t.Fatal(err)
	}
	if heldWithin(t, link) {
		t.Fatal("a symlink to a locked file reads as held")
	}
	if err := syscall.Mkfifo(path(fifo), 0o600); err != nil {
		t.Fatal(err)
	}
	if heldWithin(t, fifo) {
		t.Fatal("a fifo reads as held")
	}
	if heldWithin(t, base+"absent") {
		t.Fatal("a missing lock file reads as held")
	}
	f.Close()
	if heldWithin(t, file) {
		t.Fatal("a lock file whose holder closed it reads as held")
	}
}
