package sockets

import (
	"context"
	"github.com/clusterflock/clusterflock/reuseport"
	"os"
	"testing"
)

func TestDetectMigration(t *testing.T) {
	m, why := DetectMigration()
	t.Logf("migration here: %s (%s)", m, why)
	if os.Geteuid() == 0 && m != MigrationEBPF {
		t.Logf("root but no eBPF: %s", why)
	}
	if err := CheckMigration(m); err != nil {
		t.Errorf("CheckMigration(%s) after DetectMigration chose it: %v", m, err)
	}
	if err := CheckMigration("bogus"); err == nil {
		t.Error("CheckMigration(bogus) succeeded")
	}
}

func TestEnableMigrationEBPF(t *testing.T) {
	if err := CheckMigration(MigrationEBPF); err != nil {
		t.Skipf("eBPF migration not available here: %v", err)
	}
	ln, err := reuseport.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := EnableMigration(ln, MigrationEBPF); err != nil {
		t.Fatalf("EnableMigration: %v", err)
	}
	// Again on a second member of the group: replacing the program is fine.
	ln2, err := reuseport.Listen(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if err := EnableMigration(ln2, MigrationEBPF); err != nil {
		t.Fatalf("EnableMigration on a second listener: %v", err)
	}
}
