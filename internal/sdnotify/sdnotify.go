// Package sdnotify speaks to systemd: it sends service notifications
// (sd_notify(3)) to the socket named by $NOTIFY_SOCKET, and tells whether
// the socket-activation variables (LISTEN_PID, LISTEN_FDS) are for this
// process ([ListenFDs]).
package sdnotify

import (
	"net"
	"os"
)

// EnvSocket is the environment variable naming the notification socket.
const EnvSocket = "NOTIFY_SOCKET"

// Notifier sends notifications to one socket. The zero value (no socket)
// sends nothing.
type Notifier struct {
	socket string
}

// FromEnv returns a Notifier for $NOTIFY_SOCKET (which may be unset).
func FromEnv() Notifier { return Notifier{socket: os.Getenv(EnvSocket)} }

// Enabled reports whether there is a socket to notify.
func (n Notifier) Enabled() bool { return n.socket != "" }

// Notify sends state, e.g. "READY=1" or "MAINPID=42\nSTATUS=…", as one
// datagram. Without a socket it does nothing and returns nil.
func (n Notifier) Notify(state string) error {
	if n.socket == "" {
		return nil
	}
	name := n.socket
	if name[0] == '@' { // abstract namespace
		name = "\x00" + name[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
