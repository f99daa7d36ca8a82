package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
)

func TestNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	n := Notifier{socket: path}
	if !n.Enabled() {
		t.Fatal("Enabled() = false with a socket")
	}
	if err := n.Notify("MAINPID=42"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	k, err := ln.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:k]); got != "MAINPID=42" {
		t.Errorf("got %q, want MAINPID=42", got)
	}
	if err := (Notifier{}).Notify("READY=1"); err != nil {
		t.Errorf("Notify without a socket: %v", err)
	}
}
