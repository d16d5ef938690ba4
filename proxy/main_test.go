package proxy_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/proxy"
)

// childRole, in the environment, makes the test binary play a part for a test in a process of
// its own (as a process that runs out of descriptors, or an upstream that can be stopped).
const childRole = "PROXY_TEST_CHILD"

var roles = map[string]func() error{
	"emfile": acceptWithoutDescriptors,
}

func TestMain(m *testing.M) {
	role := os.Getenv(childRole)
	if role == "" {
		os.Exit(m.Run())
	}
	if err := roles[role](); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// child returns the command that runs the test binary as role.
func child(role string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childRole+"="+role)
	return cmd
}

// TestAcceptWithoutDescriptors: running out of file descriptors does not end Serve; the
// connection that waited is served once descriptors are free again.
func TestAcceptWithoutDescriptors(t *testing.T) {
	if out, err := child("emfile").CombinedOutput(); err != nil {
		t.Fatalf("child process: %v\n%s", err, out)
	}
}

// acceptWithoutDescriptors is the child of TestAcceptWithoutDescriptors, with a low
// RLIMIT_NOFILE: a client connects with the last free descriptor, so that Accept fails with
// EMFILE until the test frees the others.
func acceptWithoutDescriptors() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	lg := &logs{}
	r := &proxy.Server{
		Director: func(*proxy.Request) proxy.Decision {
			return proxy.Decision{Status: status.New(codes.Aborted, "served")}
		},
		Logger: slog.New(slog.NewTextHandler(lg, nil)),
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(l) }()

	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 128, Max: 128}); err != nil {
		return fmt.Errorf("setrlimit: %v", err)
	}
	var fill []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if errors.Is(err, syscall.EMFILE) {
			break
		} else if err != nil {
			return err
		}
		fill = append(fill, f)
	}
	if len(fill) == 0 {
		return errors.New("no descriptor was free under the limit")
	}
	fill[0].Close()
	c, err := net.Dial("tcp", l.Addr().String()) // takes the last one
	if err != nil {
		return fmt.Errorf("dial with one descriptor free: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	var out bytes.Buffer
	out.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&out, nil)
	fr.WriteSettings()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: callHeaders(), EndHeaders: true, EndStream: true})
	if _, err := c.Write(out.Bytes()); err != nil {
		return err
	}

	var end error
	err = waitFor(10*time.Second, func() bool {
		select {
		case end = <-served:
			return true
		default:
			return strings.Contains(lg.String(), "too many open files")
		}
	})
	switch {
	case end != nil:
		return fmt.Errorf("Serve returned %v while out of descriptors, want it to wait", end)
	case err != nil:
		return fmt.Errorf("Accept did not fail with EMFILE: %v; log %q", err, lg.String())
	}
	for _, f := range fill[1:] {
		f.Close()
	}

	rf := http2.NewFramer(nil, c)
	rf.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := rf.ReadFrame()
		if err != nil {
			return fmt.Errorf("the connection that waited was not served: %v", err)
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamEnded() {
			if got, want := h.PseudoValue("status")+" grpc-status "+fieldValue(h.Fields, "grpc-status"), "200 grpc-status "+strconv.Itoa(int(codes.Aborted)); got != want {
				return fmt.Errorf("answer %q, want %q", got, want)
			}
			break
		}
	}
	r.Close()
	if err := <-served; !errors.Is(err, proxy.ErrServerClosed) {
		return fmt.Errorf("Serve returned %v, want ErrServerClosed", err)
	}
	return nil
}

func fieldValue(fields []hpack.HeaderField, name string) string {
	for _, f := range fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// waitFor polls cond until it holds or d has passed.
func waitFor(d time.Duration, cond func() bool) error {
	for end := time.Now().Add(d); !cond(); {
		if time.Now().After(end) {
			return fmt.Errorf("not within %s", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}
