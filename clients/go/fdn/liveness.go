package fdn

// liveness.go: whether the server lives (section 10.3): its process read from /proc (started
// when, a zombie, proven gone), its lock file held, its heartbeat stale.

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// procStat reads /proc/PID/stat. A variable so that a test can make it fail as it does for a
// client at its file limit (EMFILE), which says nothing of the server's death.
var procStat = func(pid uint32) ([]byte, error) {
	return os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/stat")
}

// procMounted says whether /proc is mounted: a stat of /proc/self, which takes no file descriptor
// (it answers even at EMFILE). Without /proc an ENOENT from /proc/PID/stat proves no death. A
// variable so that a test can say it is not.
var procMounted = func() bool {
	_, err := os.Stat("/proc/self")
	return err == nil
}

// errBadStat: a /proc/PID/stat without the fields of section 10.3.
var errBadStat = errors.New("malformed /proc/PID/stat")

// statFields is /proc/PID/stat from field 3 (the state) on: the command name, field 2, may hold
// spaces and ')', so only what follows the last ')' is split.
func statFields(pid uint32) ([][]byte, error) {
	raw, err := procStat(pid)
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return nil, errBadStat
	}
	fields := bytes.Fields(raw[i+1:])
	if len(fields) < 20 {
		return nil, errBadStat
	}
	return fields, nil
}

// startTime is field 22 of /proc/PID/stat (clock ticks since boot), or why it cannot be told: the
// process is gone or a zombie, or its stat file cannot be read (EMFILE at this process's file
// limit, ENFILE, ENOMEM).
func startTime(pid uint32) (uint64, error) {
	fields, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	if fields[0][0] == 'Z' || fields[0][0] == 'X' {
		return 0, fmt.Errorf("process %d is a zombie", pid)
	}
	v, err := strconv.ParseUint(string(fields[19]), 10, 64)
	if err != nil {
		return 0, errBadStat
	}
	return v, nil
}

// provenGone is the one liveness classifier (spec 10.3): true only on proof that process pid,
// started at started, has ended: no /proc/PID (ENOENT where /proc is mounted; ESRCH as it is
// reaped), a zombie, or another start time. A stat file that cannot be read for another reason
// (EMFILE at this process's file limit, ENFILE, ENOMEM, EACCES, no /proc at all) proves nothing: kill(pid, 0), which needs no file
// descriptor, settles it (ESRCH: gone; success or EPERM: alive, its start time and whether it is a
// zombie unchecked then). Taking such a read for death failed a call to a live server gone.
func provenGone(pid uint32, started uint64) bool {
	if pid == 0 || pid > math.MaxInt32 { // no pid_t holds it: no such process (and never kill(-1))
		return true
	}
	fields, err := statFields(pid)
	if errors.Is(err, syscall.ESRCH) || (errors.Is(err, syscall.ENOENT) && procMounted()) {
		return true
	}
	if err == nil {
		if fields[0][0] == 'Z' || fields[0][0] == 'X' {
			return true
		}
		if v, perr := strconv.ParseUint(string(fields[19]), 10, 64); perr == nil {
			return v != started
		}
	}
	return syscall.Kill(int(pid), 0) == syscall.ESRCH
}

// zombieHere says whether process pid, started at started, is a zombie seen from here (dead, not
// yet reaped): the server itself, its other threads perhaps still exiting with its lock file held
// (a SIGKILL ends the main thread first; the last one unmaps the memory, a model's gigabytes for a
// tenth of a second and more, then closes the files). False where its stat cannot be read.
func zombieHere(pid uint32, started uint64) bool {
	if pid == 0 || pid > math.MaxInt32 {
		return false
	}
	fields, err := statFields(pid)
	if err != nil || (fields[0][0] != 'Z' && fields[0][0] != 'X') {
		return false
	}
	v, err := strconv.ParseUint(string(fields[19]), 10, 64)
	return err == nil && v == started
}

// alive is section 10.3: READY or STOPPING, and server_pid is not proven gone (provenGone).
func (c *Client) alive() bool {
	state := atomic.LoadUint32(c.u32(rState))
	if state != stateReady && state != stateStopping {
		return false
	}
	c.looks++
	return !provenGone(c.serverPid, c.serverStart)
}

// lockFileHeld says whether a live process holds the flock on the server's lock file
// /dev/shm/fdn-NAME.lock. Only a regular file is asked (no symlink followed, no wait on a fifo);
// anything else is "no".
func lockFileHeld(name string) bool {
	fd, err := syscall.Open("/dev/shm/fdn-"+name+".lock",
		syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer syscall.Close(fd) // drops the shared lock if it was taken
	var st syscall.Stat_t
	if syscall.Fstat(fd, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return false
	}
	err = syscall.Flock(fd, syscall.LOCK_SH|syscall.LOCK_NB)
	return err == syscall.EWOULDBLOCK || err == syscall.EAGAIN
}

// hung is section 10.3: why the server counts as hung (its heartbeat is older than 10 intervals,
// and at least 1 s: a stopped or stalled process), or "". The server beats from a thread of its
// own, so a model that runs for seconds does not make it hung.
func (c *Client) hung() string {
	beat := atomic.LoadUint64(c.u64(rHeartbeatNs))
	interval := uint64(atomic.LoadUint32(c.u32(rHeartbeatMs)))
	if interval == 0 {
		interval = 1
	}
	stale := 10 * interval * uint64(time.Millisecond)
	if stale < uint64(hungMin) {
		stale = uint64(hungMin)
	}
	now := monotonicNs()
	if beat == 0 || now <= beat+stale {
		return ""
	}
	return fmt.Sprintf("shm server %q (pid %d) is hung: no heartbeat for %d ms", c.name, c.serverPid, (now-beat)/1e6)
}
