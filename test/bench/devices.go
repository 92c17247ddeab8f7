package main

// The device bench: the same guest, disk image and network on TCG, once
// with wisp's devices (served to QEMU over vhost-user) and once with QEMU's
// built-in virtio-blk and virtio-net on a tap. fio and iperf3 come from the
// host's Debian packages, copied with their libraries onto a read-only
// "tools" disk the guest runs them from.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wisp-vmm/wisp/guest"
	"github.com/wisp-vmm/wisp/guest/initproto"
)

const (
	benchDataSize = 512 << 20
	benchNetNS    = "wisp-bench"
	benchBridge   = "wbr0"
	benchHostIP   = "10.0.9.1"
	benchGuestIP  = "10.0.9.2"
	benchQEMUTap  = "wbqtap0"
)

// toolsDisk builds (once, cached) an ext4 image holding fio, iperf3 and
// every shared library they load, so the guest runs them through the
// image's own dynamic loader.
func toolsDisk(dir string) (string, error) {
	img := filepath.Join(dir, "tools.ext4")
	if _, err := os.Stat(img); err == nil {
		return img, nil
	}
	tree, err := os.MkdirTemp(dir, "tools-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tree)
	for _, d := range []string{"bin", "lib"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return "", err
		}
	}
	for _, tool := range []string{"fio", "iperf3"} {
		path, err := exec.LookPath(tool)
		if err != nil {
			return "", fmt.Errorf("%s not found: apt-get install fio iperf3 (make deps does)", tool)
		}
		if err := copyFile(path, filepath.Join(tree, "bin", tool)); err != nil {
			return "", err
		}
		libs, err := sharedLibs(path)
		if err != nil {
			return "", err
		}
		for _, lib := range libs {
			if err := copyFile(lib, filepath.Join(tree, "lib", filepath.Base(lib))); err != nil {
				return "", err
			}
		}
	}
	tmp := img + ".tmp"
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, tmp, "1G").CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("mkfs.ext4 tools disk: %v: %s", err, out)
	}
	return img, os.Rename(tmp, img)
}

// sharedLibs lists the libraries ldd resolves for bin, loader included.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	return libs, nil
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}

// dataDisk is a fully written (not sparse) raw image, so reads hit real
// blocks on both sides.
func dataDisk(dir string) (string, error) {
	img := filepath.Join(dir, "data.img")
	if st, err := os.Stat(img); err == nil && st.Size() == benchDataSize {
		return img, nil
	}
	out, err := exec.Command("dd", "if=/dev/urandom", "of="+img+".tmp", "bs=1M",
		fmt.Sprintf("count=%d", benchDataSize>>20), "status=none").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("make data disk: %v: %s", err, out)
	}
	return img, os.Rename(img+".tmp", img)
}

// guestRun is what the guest's init runs: mount the tools disk, then the
// given shell script with $RUN as the loader prefix.
func guestScript(toolsDev, body string) string {
	return "mkdir -p /t && mount -t ext4 -o ro " + toolsDev + " /t && " +
		"RUN='/t/lib/ld-linux-x86-64.so.2 --library-path /t/lib' && " + body
}

const fioJobs = "$RUN /t/bin/fio --output-format=json --filename=/dev/vda --direct=1 --ioengine=psync " +
	"--name=seqread --rw=read --bs=1M --size=256M " +
	"--name=seqwrite --stonewall --rw=write --bs=1M --size=256M " +
	"--name=randread --stonewall --rw=randread --bs=4k --size=256M --runtime=8 --time_based " +
	"--name=randwrite --stonewall --rw=randwrite --bs=4k --size=256M --runtime=8 --time_based"

type fioResult struct {
	Jobs []struct {
		Name  string `json:"jobname"`
		Read  fioIO  `json:"read"`
		Write fioIO  `json:"write"`
	} `json:"jobs"`
}

type fioIO struct {
	BW    float64 `json:"bw"` // KiB/s
	IOPS  float64 `json:"iops"`
	Bytes uint64  `json:"io_bytes"`
}

type devSample struct {
	values map[string]float64
	moved  uint64        // bytes through the device
	cpu    time.Duration // host CPU, user + system, of the whole process tree
}

// runGuest runs argv (wisp or bare QEMU) to its end and returns stdout and
// the CPU time of the process and its reaped children.
func runGuest(ctx context.Context, argv []string) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var cpu time.Duration
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru != nil {
		cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if err != nil {
		return out.String(), cpu, fmt.Errorf("%s: %v: %s", filepath.Base(argv[0]), err, lastLine(errOut.String()+out.String()))
	}
	return out.String(), cpu, nil
}

func commandCmdline(script string) (string, error) {
	param, err := initproto.EncodeCmd([]string{"sh", "-c", script})
	if err != nil {
		return "", err
	}
	return "console=ttyS0 reboot=k panic=-1 quiet " + param + " " + initproto.ParamTTY + "=raw", nil
}

// bareQEMUDeviceArgs is bareQEMUArgs with the console on stdout (the
// command's output) and 1 GiB of RAM.
func bareQEMUDeviceArgs(qemu, kernel, initrd, cmdline string) []string {
	args := []string{qemu, "-nodefaults", "-no-user-config", "-nographic",
		"-accel", "tcg", "-machine", "q35", "-cpu", "max", "-smp", "1", "-m", "1G",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline,
		"-serial", "stdio", "-no-reboot"}
	if _, err := os.Stat(qbootROM); err == nil {
		args = append(args, "-bios", qbootROM)
	}
	return args
}

func diskBench(ctx context.Context, n int, wispBin, qemu string, kern *guest.Kernel, initrd, dir string) error {
	tools, err := toolsDisk(dir)
	if err != nil {
		return err
	}
	data, err := dataDisk(dir)
	if err != nil {
		return err
	}
	cmdline, err := commandCmdline(guestScript("/dev/vdb", fioJobs))
	if err != nil {
		return err
	}
	subjects := []struct {
		name string
		argv []string
	}{
		{"wisp (vhost-user virtio-blk)", []string{wispBin, "run", "--accel", "tcg", "--memory", "1G", "--rng=false",
			"--kernel", kern.Image, "--initrd", initrd, "--cmdline", cmdline, "--disk", data, "--disk", tools + ",ro"}},
		{"bare QEMU virtio-blk", append(bareQEMUDeviceArgs(qemu, kern.Image, initrd, cmdline),
			"-drive", "file="+data+",format=raw,if=virtio", "-drive", "file="+tools+",format=raw,if=virtio,readonly=on")},
	}
	results := make([][]devSample, len(subjects))
	for i := 0; i < n; i++ {
		for j, s := range subjects {
			out, cpu, err := runGuest(ctx, s.argv)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			r, err := parseFio(out)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			r.cpu = cpu
			results[j] = append(results[j], r)
		}
	}
	keys := []string{"seqread MB/s", "seqwrite MB/s", "randread IOPS", "randwrite IOPS", "host CPU s/GB"}
	printDevTable(os.Stdout, "disk (fio, direct I/O, psync; 1 vCPU, TCG)", keys, []string{subjects[0].name, subjects[1].name}, results)
	return nil
}

func parseFio(out string) (devSample, error) {
	i := strings.IndexByte(out, '{')
	j := strings.LastIndexByte(out, '}')
	if i < 0 || j < i {
		return devSample{}, fmt.Errorf("no fio JSON in the guest's output: %q", lastLine(out))
	}
	var r fioResult
	if err := json.Unmarshal([]byte(out[i:j+1]), &r); err != nil {
		return devSample{}, fmt.Errorf("fio JSON: %w", err)
	}
	s := devSample{values: map[string]float64{}}
	for _, job := range r.Jobs {
		s.moved += job.Read.Bytes + job.Write.Bytes
		switch job.Name {
		case "seqread":
			s.values["seqread MB/s"] = job.Read.BW * 1024 / 1e6
		case "seqwrite":
			s.values["seqwrite MB/s"] = job.Write.BW * 1024 / 1e6
		case "randread":
			s.values["randread IOPS"] = job.Read.IOPS
		case "randwrite":
			s.values["randwrite IOPS"] = job.Write.IOPS
		}
	}
	if len(s.values) != 4 {
		return devSample{}, fmt.Errorf("fio reported %d of 4 jobs", len(s.values))
	}
	return s, nil
}

// netBench measures TCP throughput from the guest to an iperf3 server on
// a bridge in a network namespace the bench makes.
func netBench(ctx context.Context, n int, wispBin, qemu string, kern *guest.Kernel, initrd, dir string) error {
	if os.Geteuid() != 0 {
		fmt.Println("network: skipped (needs root for the namespace and taps)")
		return nil
	}
	tools, err := toolsDisk(dir)
	if err != nil {
		return err
	}
	cleanup, err := benchNamespace()
	if err != nil {
		return err
	}
	defer cleanup()
	server := exec.Command("ip", "netns", "exec", benchNetNS, "iperf3", "-s", "-B", benchHostIP)
	if err := server.Start(); err != nil {
		return fmt.Errorf("iperf3 server: %w", err)
	}
	defer func() { _ = server.Process.Kill(); _ = server.Wait() }()
	time.Sleep(300 * time.Millisecond) // let it listen; the guest retries anyway

	script := guestScript("/dev/vda", "ip addr add "+benchGuestIP+"/24 dev eth0 && ip link set eth0 up && "+
		"for i in 1 2 3 4 5; do $RUN /t/bin/iperf3 -c "+benchHostIP+" -t 5 -J > /tmp/r && break; sleep 1; done; cat /tmp/r")
	cmdline, err := commandCmdline(script)
	if err != nil {
		return err
	}
	inNS := []string{"ip", "netns", "exec", benchNetNS}
	subjects := []struct {
		name string
		argv []string
	}{
		{"wisp (vhost-user virtio-net)", append(inNS, wispBin, "run", "--accel", "tcg", "--memory", "1G", "--rng=false",
			"--kernel", kern.Image, "--initrd", initrd, "--cmdline", cmdline, "--disk", tools+",ro", "--net", "tap,bridge="+benchBridge)},
		{"bare QEMU virtio-net + tap", append(append(inNS, bareQEMUDeviceArgs(qemu, kern.Image, initrd, cmdline)...),
			"-drive", "file="+tools+",format=raw,if=virtio,readonly=on",
			"-netdev", "tap,id=n0,ifname="+benchQEMUTap+",script=no,downscript=no", "-device", "virtio-net-pci,netdev=n0")},
	}
	results := make([][]devSample, len(subjects))
	for i := 0; i < n; i++ {
		for j, s := range subjects {
			out, cpu, err := runGuest(ctx, s.argv)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			r, err := parseIperf(out)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			r.cpu = cpu
			results[j] = append(results[j], r)
		}
	}
	printDevTable(os.Stdout, "network (iperf3 TCP, guest → host over a bridge; 1 vCPU, TCG)",
		[]string{"TCP Mbit/s", "host CPU s/GB"}, []string{subjects[0].name, subjects[1].name}, results)
	return nil
}

func parseIperf(out string) (devSample, error) {
	i := strings.IndexByte(out, '{')
	j := strings.LastIndexByte(out, '}')
	if i < 0 || j < i {
		return devSample{}, fmt.Errorf("no iperf3 JSON in the guest's output: %q", lastLine(out))
	}
	var r struct {
		End struct {
			SumReceived struct {
				Bytes uint64  `json:"bytes"`
				BPS   float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out[i:j+1]), &r); err != nil {
		return devSample{}, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if r.Error != "" {
		return devSample{}, errors.New("iperf3: " + r.Error)
	}
	return devSample{values: map[string]float64{"TCP Mbit/s": r.End.SumReceived.BPS / 1e6}, moved: r.End.SumReceived.Bytes}, nil
}

// benchNamespace makes the namespace with a bridge at benchHostIP and a
// persistent tap on it for bare QEMU (wisp makes its own tap).
func benchNamespace() (func(), error) {
	_ = exec.Command("ip", "netns", "del", benchNetNS).Run()
	steps := [][]string{
		{"ip", "netns", "add", benchNetNS},
		{"ip", "-n", benchNetNS, "link", "set", "lo", "up"},
		{"ip", "-n", benchNetNS, "link", "add", benchBridge, "type", "bridge"},
		{"ip", "-n", benchNetNS, "addr", "add", benchHostIP + "/24", "dev", benchBridge},
		{"ip", "-n", benchNetNS, "link", "set", benchBridge, "up"},
		{"ip", "-n", benchNetNS, "tuntap", "add", benchQEMUTap, "mode", "tap", "vnet_hdr"},
		{"ip", "-n", benchNetNS, "link", "set", benchQEMUTap, "master", benchBridge, "up"},
	}
	cleanup := func() { _ = exec.Command("ip", "netns", "del", benchNetNS).Run() }
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			cleanup()
			return nil, fmt.Errorf("%s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	return cleanup, nil
}

func printDevTable(w io.Writer, title string, keys, names []string, results [][]devSample) {
	fmt.Fprintf(w, "%s, median of %d\n", title, len(results[0]))
	fmt.Fprintf(w, "  %-32s", "")
	for _, k := range keys {
		fmt.Fprintf(w, " %15s", k)
	}
	fmt.Fprintln(w)
	med := make([][]float64, len(names))
	for i, name := range names {
		fmt.Fprintf(w, "  %-32s", name)
		for _, k := range keys {
			var xs []int64
			for _, s := range results[i] {
				v := s.values[k]
				if k == "host CPU s/GB" && s.moved > 0 {
					v = s.cpu.Seconds() / (float64(s.moved) / 1e9)
				}
				xs = append(xs, int64(v*1000))
			}
			m := float64(median(xs)) / 1000
			med[i] = append(med[i], m)
			fmt.Fprintf(w, " %15.1f", m)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  %-32s", "ratio wisp / QEMU")
	for i := range keys {
		fmt.Fprintf(w, " %14.3fx", med[0][i]/med[1][i])
	}
	fmt.Fprintf(w, "\n  (throughput goal >= 1.0; host CPU per GB includes the boot, lower is better)\n\n")
}
