//go:build unix

package metrics

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// sendFile sends f over c (one byte, with f as SCM_RIGHTS).
func sendFile(c *net.UnixConn, f *os.File) error {
	_, _, err := c.WriteMsgUnix([]byte{'L'}, syscall.UnixRights(int(f.Fd())), nil)
	return err
}

// receiveFile receives a file sent by sendFile.
func receiveFile(c *net.UnixConn) (*os.File, error) {
	oob := make([]byte, syscall.CmsgSpace(4))
	_, oobn, _, _, err := c.ReadMsgUnix(make([]byte, 1), oob)
	if err != nil {
		return nil, err
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("no descriptor came (%v)", err)
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		if err == nil {
			err = errors.New("not one descriptor")
		}
		return nil, fmt.Errorf("no descriptor came (%v)", err)
	}
	return os.NewFile(uintptr(fds[0]), "clusterflock-metrics"), nil
}
