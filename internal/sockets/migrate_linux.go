package sockets

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const migrateSysctl = "/proc/sys/net/ipv4/tcp_migrate_req"

// DetectMigration returns the best mechanism this process can use, and why
// better ones are not available ("" for eBPF).
func DetectMigration() (Migration, string) {
	fd, err := loadMigrateProgram()
	if err == nil {
		unix.Close(fd)
		return MigrationEBPF, ""
	}
	why := fmt.Sprintf("eBPF: %v", err)
	if on, err := sysctlMigrate(); err != nil {
		why += fmt.Sprintf("; sysctl: %v", err)
	} else if on {
		return MigrationSysctl, why
	} else {
		why += "; net.ipv4.tcp_migrate_req is 0"
	}
	if err := CheckSteering(); err != nil {
		return MigrationNone, why + fmt.Sprintf("; classic BPF steering: %v", err)
	}
	return MigrationCBPF, why
}

// CheckMigration reports whether m can be used here, with the reason if not.
func CheckMigration(m Migration) error {
	switch m {
	case MigrationEBPF:
		fd, err := loadMigrateProgram()
		if err != nil {
			return err
		}
		unix.Close(fd)
	case MigrationSysctl:
		on, err := sysctlMigrate()
		if err != nil {
			return err
		}
		if !on {
			return errors.New("net.ipv4.tcp_migrate_req is 0")
		}
	case MigrationCBPF:
		return CheckSteering()
	case MigrationNone:
	default:
		return fmt.Errorf("unknown migration mechanism %q", m)
	}
	return nil
}

func sysctlMigrate() (bool, error) {
	b, err := os.ReadFile(migrateSysctl)
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

// EnableMigration prepares ln, a listener from [Listen], for m. For eBPF it
// (re)attaches the migration program to ln's group; the group keeps it after
// ln closes, so every worker attaching it on start keeps the group covered.
func EnableMigration(ln net.Listener, m Migration) error {
	if m != MigrationEBPF {
		return nil
	}
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return fmt.Errorf("%T has no file descriptor", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	prog, err := loadMigrateProgram()
	if err != nil {
		return err
	}
	defer unix.Close(prog)
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, prog)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("setsockopt SO_ATTACH_REUSEPORT_EBPF: %w", serr)
	}
	return nil
}

// bpfProgLoadAttr is the prefix of union bpf_attr used by BPF_PROG_LOAD, up
// to expected_attach_type (72 bytes).
type bpfProgLoadAttr struct {
	ProgType           uint32
	InsnCnt            uint32
	Insns              uint64
	License            uint64
	LogLevel           uint32
	LogSize            uint32
	LogBuf             uint64
	KernVersion        uint32
	ProgFlags          uint32
	ProgName           [16]byte
	ProgIfindex        uint32
	ExpectedAttachType uint32
}

// loadMigrateProgram loads "r0 = SK_PASS; exit" as a reuseport program that
// may migrate, and returns its fd.
func loadMigrateProgram() (int, error) {
	insns := [2]uint64{
		0xb7 | 1<<32, // BPF_ALU64|BPF_MOV|BPF_K: r0 = 1 (SK_PASS)
		0x95,         // BPF_JMP|BPF_EXIT
	}
	license := []byte("GPL\x00")
	attr := bpfProgLoadAttr{
		ProgType:           unix.BPF_PROG_TYPE_SK_REUSEPORT,
		InsnCnt:            uint32(len(insns)),
		Insns:              uint64(uintptr(unsafe.Pointer(&insns[0]))),
		License:            uint64(uintptr(unsafe.Pointer(&license[0]))),
		ExpectedAttachType: unix.BPF_SK_REUSEPORT_SELECT_OR_MIGRATE,
	}
	copy(attr.ProgName[:], "cflock_migrate")
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(&insns)
	runtime.KeepAlive(license)
	if errno != 0 {
		return -1, fmt.Errorf("load reuseport BPF program: %w", errno)
	}
	unix.CloseOnExec(int(fd))
	return int(fd), nil
}
