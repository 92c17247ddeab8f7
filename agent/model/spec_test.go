package model_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/vmm"
)

func validSpec() model.Spec {
	return model.Spec{CPUs: 1, MemoryBytes: 256 << 20}
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name      string
		edit      func(s *model.Spec)
		wantField string // "" means valid
		wantMsg   string
	}{
		{"default guest", func(s *model.Spec) {}, "", ""},
		{"full kernel spec", func(s *model.Spec) {
			s.Kernel, s.Initrd, s.Cmdline = "/boot/vmlinuz", "/boot/initrd.img", "console=ttyS0"
			s.CPUs, s.MemoryBytes = 64, 1<<30
			s.Disks = []string{"/srv/a.img,ro", "/srv/b.qcow2,format=qcow2,serial=data"}
			s.Nets = []string{"user,hostfwd=tcp:2222-:22", "tap:vm0,bridge=br0"}
			s.Boot, s.Accel, s.OnReboot = "kernel", "kvm", "restart"
			s.SSHKeys, s.UserData, s.Hostname = []string{"/root/.ssh/id.pub"}, "/srv/ud.yaml", "web1"
			s.Command = []string{"uname", "-a"}
		}, "", ""},
		{"image", func(s *model.Spec) { s.Image = "/srv/cloud.qcow2" }, "", ""},
		{"vm dir", func(s *model.Spec) { s.VMDir = "/srv/vm" }, "", ""},
		{"zero cpus", func(s *model.Spec) { s.CPUs = 0 }, "cpus", "0; want 1 to 64"},
		{"too many cpus", func(s *model.Spec) { s.CPUs = 65 }, "cpus", "65; want 1 to 64"},
		{"negative cpus", func(s *model.Spec) { s.CPUs = -1 }, "cpus", ""},
		{"no memory", func(s *model.Spec) { s.MemoryBytes = 0 }, "memory_bytes", ""},
		{"just under 16 MiB", func(s *model.Spec) { s.MemoryBytes = 16<<20 - 1 }, "memory_bytes", ""},
		{"exactly 16 MiB", func(s *model.Spec) { s.MemoryBytes = 16 << 20 }, "", ""},
		{"kernel and image", func(s *model.Spec) { s.Kernel, s.Image = "/k", "/i" }, "kernel", "give at most one of kernel, image and vm_dir"},
		{"image and vm dir", func(s *model.Spec) { s.Image, s.VMDir = "/i", "/d" }, "kernel", ""},
		{"initrd without kernel", func(s *model.Spec) { s.Initrd = "/boot/initrd.img" }, "initrd", "needs kernel"},
		{"command with image", func(s *model.Spec) { s.Image, s.Command = "/i", []string{"sh"} }, "command", ""},
		{"relative kernel", func(s *model.Spec) { s.Kernel = "vmlinuz" }, "kernel", `"vmlinuz" is relative; give an absolute path (the agent resolves it, not the client)`},
		{"relative initrd", func(s *model.Spec) { s.Kernel, s.Initrd = "/k", "./initrd" }, "initrd", ""},
		{"relative image", func(s *model.Spec) { s.Image = "cloud.qcow2" }, "image", ""},
		{"relative vm dir", func(s *model.Spec) { s.VMDir = "vm/" }, "vm_dir", ""},
		{"relative user data", func(s *model.Spec) { s.UserData = "ud.yaml" }, "user_data", ""},
		{"relative ssh key", func(s *model.Spec) { s.SSHKeys = []string{"/ok.pub", "id.pub"} }, "ssh_keys[1]", ""},
		{"relative second disk", func(s *model.Spec) { s.Disks = []string{"/a.img", "b.img,ro"} }, "disks[1]", `"b.img" is relative`},
		{"bad disk option", func(s *model.Spec) { s.Disks = []string{"/a.img,rx"} }, "disks[0]", `unknown option "rx"`},
		{"empty disk", func(s *model.Spec) { s.Disks = []string{""} }, "disks[0]", ""},
		{"bad net", func(s *model.Spec) { s.Nets = []string{"user", "bridge"} }, "nets[1]", `unknown mode "bridge"`},
		{"bad boot", func(s *model.Spec) { s.Boot = "uefi" }, "boot", `"uefi"; want one of [kernel firmware]`},
		{"bad accel", func(s *model.Spec) { s.Accel = "hvf" }, "accel", ""},
		{"bad on reboot", func(s *model.Spec) { s.OnReboot = "halt" }, "on_reboot", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec()
			tt.edit(&s)
			err := s.Validate()
			if tt.wantField == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, model.ErrInvalid)
			var fe *model.FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, tt.wantField, fe.Field)
			assert.Contains(t, fe.Msg, tt.wantMsg)
		})
	}
}

func TestSpecArgs(t *testing.T) {
	off := false
	tests := []struct {
		name string
		spec model.Spec
		want []string
	}{
		{"smallest", model.Spec{CPUs: 1, MemoryBytes: 256 << 20}, []string{"--cpus", "1", "--memory", "268435456"}},
		{"everything", model.Spec{
			Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyS0 quiet",
			CPUs: 2, MemoryBytes: 536870912,
			Disks: []string{"/a.img,ro", "/b.img"}, Nets: []string{"user,hostfwd=tcp:2222-:22"},
			RNG: &off, Boot: "kernel", Accel: "tcg", OnReboot: "restart",
			SSHKeys: []string{"/k1.pub", "/k2.pub"}, UserData: "/ud", Hostname: "web1",
			Command: []string{"sh", "-c", "echo --cpus 9"},
		}, []string{
			"--kernel", "/k", "--initrd", "/i", "--cmdline", "console=ttyS0 quiet",
			"--cpus", "2", "--memory", "536870912",
			"--disk", "/a.img,ro", "--disk", "/b.img", "--net", "user,hostfwd=tcp:2222-:22",
			"--rng=false", "--boot", "kernel", "--accel", "tcg", "--on-reboot", "restart",
			"--ssh-key", "/k1.pub", "--ssh-key", "/k2.pub", "--user-data", "/ud", "--hostname", "web1",
			"--", "sh", "-c", "echo --cpus 9",
		}},
		{"image", model.Spec{CPUs: 4, MemoryBytes: 1 << 30, Image: "/c.qcow2"}, []string{"--cpus", "4", "--memory", "1073741824", "--image", "/c.qcow2"}},
		{"vm dir", model.Spec{CPUs: 1, MemoryBytes: 1 << 30, VMDir: "/srv/vm"}, []string{"--cpus", "1", "--memory", "1073741824", "--vm", "/srv/vm"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.spec.Args())
		})
	}
}

// TestSpecArgsMemoryReadsBack checks that the byte count Args writes is
// the size wisp run reads.
func TestSpecArgsMemoryReadsBack(t *testing.T) {
	for _, mem := range []uint64{16 << 20, 1536 << 20, 3<<30 + 4096} {
		args := model.Spec{CPUs: 1, MemoryBytes: mem}.Args()
		require.Equal(t, "--memory", args[2])
		got, err := vmm.ParseSize(args[3])
		require.NoError(t, err)
		assert.Equal(t, mem, got)
	}
}

func TestSpecJSON(t *testing.T) {
	on := true
	in := model.Spec{Kernel: "/k", CPUs: 2, MemoryBytes: 1 << 30, RNG: &on, Disks: []string{"/a"}, Command: []string{"true"}}
	raw, err := json.Marshal(in)
	require.NoError(t, err)
	assert.JSONEq(t, `{"kernel":"/k","cpus":2,"memory_bytes":1073741824,"rng":true,"disks":["/a"],"command":["true"]}`, string(raw))
	var out model.Spec
	require.NoError(t, json.Unmarshal(raw, &out))
	assert.Equal(t, in, out)
}
