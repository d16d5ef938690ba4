//go:build race

package rawsock

import (
	"runtime"
	"syscall"
	"unsafe"
)

// Under the race detector, a read and a write tell it what syscall.Read and syscall.Write do:
// the bytes they touch, and that every write to any descriptor happens before every later read.
// That last edge is how the detector sees a goroutine's write to a socket order a goroutine
// that reads the answer, through another process. It lives on syscall's private variable, so
// it is reached by an empty read or write of /dev/null through syscall itself.
var devNull = func() int {
	fd, err := syscall.Open("/dev/null", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		panic("rawsock: opening /dev/null for the race detector: " + err.Error())
	}
	return fd
}()

func raceRead(b []byte, n int) {
	if n > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&b[0]), n)
	}
	syscall.Read(devNull, nil)
}

func raceWrite(b []byte) {
	syscall.Write(devNull, nil)
	if len(b) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&b[0]), len(b))
	}
}
