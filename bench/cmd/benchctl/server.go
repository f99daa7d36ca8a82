package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// serverSpec is one server under test.
type serverSpec struct {
	name     string
	handlers []string // handlers it implements
	procs    int      // processes that answer requests (1 or the worker count)
	isGo     bool     // answers /info with its GOMAXPROCS
	command  func(port int, handler, dir string) ([]string, []string, error)
}

func (s serverSpec) serves(handler string) bool {
	for _, h := range s.handlers {
		if h == handler {
			return true
		}
	}
	return false
}

// servers builds the list of servers for this run; skipped ones come back
// with the reason.
func (c *config) servers() (specs []serverSpec, skipped []string) {
	all := []string{"ok", "alloc", "sleep"}
	goServer := func(name, mode string, procs int, extra ...string) serverSpec {
		return serverSpec{name: name, handlers: all, procs: procs, isGo: true,
			command: func(port int, handler, dir string) ([]string, []string, error) {
				return []string{c.goserver}, append(c.goEnv(mode, handler, port, c.workers), extra...), nil
			}}
	}
	for _, name := range c.serverNames {
		switch name {
		case "single", "singleAA":
			// singleAA is the A/A control: the baseline started again, so
			// its ratio to single is the noise of the run.
			specs = append(specs, goServer(name, "single", 1))
		case "singleK":
			specs = append(specs, goServer(name, "single", 1, sysmonAwake))
		case "singleD":
			specs = append(specs, goServer(name, "single", 1, "BENCH_DEFER_ACCEPT=1"))
		case "poolK", "poolSh":
			if !c.poolBuilt {
				skipped = append(skipped, name+": the clusterflock library did not build ("+c.poolBuildErr+")")
				continue
			}
			specs = append(specs, goServer(name, name, c.workers))
		case "pool", "pool1", "poolN", "poolC", "poolM", "poolS":
			if !c.poolBuilt {
				skipped = append(skipped, name+": the clusterflock library did not build ("+c.poolBuildErr+")")
				continue
			}
			if name == "poolM" {
				s := c.poolMSpec(c.workers)
				s.handlers = c.poolMHandlers
				specs = append(specs, s)
				continue
			}
			s := goServer(name, name, c.workers)
			if name == "poolS" {
				s.handlers = c.poolSHandlers
			}
			specs = append(specs, s)
		case "nginx":
			bin, err := exec.LookPath("nginx")
			if err != nil {
				bin = "/usr/sbin/nginx"
				if _, err := os.Stat(bin); err != nil {
					skipped = append(skipped, "nginx: not installed (bench/run installs nginx-light with apt-get; that failed or was skipped)")
					continue
				}
			}
			specs = append(specs, serverSpec{name: "nginx", handlers: []string{"ok"}, procs: c.workers,
				command: func(port int, handler, dir string) ([]string, []string, error) {
					prefix := filepath.Join(dir, "nginx")
					for _, d := range []string{"", "body", "proxy", "fastcgi", "uwsgi", "scgi"} {
						if err := os.MkdirAll(filepath.Join(prefix, d), 0o755); err != nil {
							return nil, nil, err
						}
					}
					tmpl, err := os.ReadFile(filepath.Join(c.benchDir, "servers/nginx/nginx.conf.in"))
					if err != nil {
						return nil, nil, err
					}
					conf := strings.NewReplacer("@PORT@", strconv.Itoa(port), "@PREFIX@", prefix,
						"@WORKERS@", strconv.Itoa(c.workers)).Replace(string(tmpl))
					path := filepath.Join(prefix, "nginx.conf")
					if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
						return nil, nil, err
					}
					return []string{bin, "-p", prefix, "-e", filepath.Join(prefix, "error.log"), "-c", path}, nil, nil
				}})
		case "node":
			bin, err := exec.LookPath("node")
			if err != nil {
				skipped = append(skipped, "node: `node` is not on PATH")
				continue
			}
			specs = append(specs, serverSpec{name: "node", handlers: []string{"ok"}, procs: c.workers,
				command: func(port int, handler, dir string) ([]string, []string, error) {
					return []string{bin, filepath.Join(c.benchDir, "servers/node/cluster.js")},
						[]string{"BENCH_ADDR=127.0.0.1:" + strconv.Itoa(port), "BENCH_WORKERS=" + strconv.Itoa(c.workers)}, nil
				}})
		default:
			skipped = append(skipped, name+": unknown server name")
		}
	}
	return specs, skipped
}

// sysmonAwake is singleK's runtime setting, the one that
// Options.KeepSysmonAwake gives poolK's workers: sysmon never deep-sleeps
// (bench/SYSMON.md).
const sysmonAwake = "GODEBUG=schedtrace=2147483647"

// goEnv is the environment that gives goserver its shape.
func (c *config) goEnv(mode, handler string, port, workers int) []string {
	return []string{
		"BENCH_MODE=" + mode,
		"BENCH_HANDLER=" + handler,
		"BENCH_ADDR=127.0.0.1:" + strconv.Itoa(port),
		"BENCH_WORKERS=" + strconv.Itoa(workers),
	}
}

// poolMSpec is the pool with Options.Metrics (goserver's poolM) and the
// given worker count: the supervisor serves /metrics on a free port that
// the harness picks at each start (running.metricsAddr).
func (c *config) poolMSpec(workers int) serverSpec {
	return serverSpec{name: "poolM", handlers: []string{"ok", "alloc", "sleep"}, procs: workers, isGo: true,
		command: func(port int, handler, dir string) ([]string, []string, error) {
			mport, err := freePort()
			if err != nil {
				return nil, nil, fmt.Errorf("no free port for /metrics: %w", err)
			}
			env := append(c.goEnv("poolM", handler, port, workers), "BENCH_METRICS_ADDR=127.0.0.1:"+strconv.Itoa(mport))
			return []string{c.goserver}, env, nil
		}}
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// running is a started server tree.
type running struct {
	spec serverSpec
	cmd  *exec.Cmd
	pid  int
	addr string
	// metricsAddr is where the supervisor serves /metrics (poolM), or "".
	metricsAddr string
	log         string
	done        chan struct{}
	procs       []int // answering PIDs seen at start
	gmp         string
}

// start launches spec with handler, pinned to CPU 0 when pin is set, and
// waits until all its processes answer.
func (c *config) start(spec serverSpec, handler string, pin bool) (*running, error) {
	c.port++
	if c.port > 19999 {
		c.port = 18000
	}
	port := c.port
	dir := filepath.Join(c.work, "srv")
	argv, env, err := spec.command(port, handler, dir)
	if err != nil {
		return nil, err
	}
	if pin {
		argv = append([]string{"taskset", "-c", c.serverCPU}, argv...)
	}
	logPath := filepath.Join(c.work, "logs", fmt.Sprintf("%03d-%s-%s.log", port%1000, spec.name, handler))
	os.MkdirAll(filepath.Dir(logPath), 0o755)
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(serverEnv(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// Own process group, so the harness can signal the whole tree; die with
	// the harness (the pidfile lets bench/run clean up if that fails too).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &running{spec: spec, cmd: cmd, pid: cmd.Process.Pid, addr: fmt.Sprintf("127.0.0.1:%d", port), log: logPath, done: make(chan struct{})}
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "BENCH_METRICS_ADDR="); ok {
			r.metricsAddr = v
		}
	}
	c.track(r.pid)
	go func() { cmd.Wait(); close(r.done) }()
	pids, err := waitReady(r.addr, spec.procs, 10*time.Second)
	if err == nil {
		select {
		case <-r.done:
			err = errors.New("server exited")
		default:
		}
	}
	if err != nil {
		r.stop()
		return nil, fmt.Errorf("%s/%s did not become ready: %v; log tail: %s", spec.name, handler, err, tail(logPath, 300))
	}
	r.procs = pids
	if spec.isGo {
		r.gmp = goInfo(r.addr, pids)
	}
	return r, nil
}

// goInfo asks each Go process for its GOMAXPROCS ("/info" answers
// "pid=… gomaxprocs=…"), e.g. "1,1".
func goInfo(addr string, pids []int) string {
	got := map[int]string{}
	deadline := time.Now().Add(2 * time.Second)
	for len(got) < len(pids) && time.Now().Before(deadline) {
		a, err := probe(addr, "/info", 250*time.Millisecond)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(a.body) {
			if v, ok := strings.CutPrefix(f, "gomaxprocs="); ok {
				got[a.pid] = v
			}
		}
	}
	var vals []string
	for _, p := range sortedKeys(got) {
		vals = append(vals, got[p])
	}
	return strings.Join(vals, "/")
}

// stop ends the tree: SIGTERM to the root, then after 3 s SIGKILL to the
// process group and every descendant seen.
func (r *running) stop() {
	seen := descendants(r.pid)
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(3 * time.Second):
	}
	syscall.Kill(-r.pid, syscall.SIGKILL)
	for _, p := range append(seen, descendants(r.pid)...) {
		if p > 1 && alive(p) {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
	<-r.done
	deadline := time.Now().Add(2 * time.Second)
	for _, p := range seen {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// serverEnv is the harness's environment without GOMAXPROCS, so that every
// Go server picks its own default.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMAXPROCS=") {
			env = append(env, kv)
		}
	}
	return env
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	if s == "" {
		return "(empty)"
	}
	return strings.ReplaceAll(s, "\n", " | ")
}
