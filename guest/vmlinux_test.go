package guest

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

// tinyELF returns a valid little ELF64 x86-64 file: this test binary's own
// code is one, so compile nothing and use a real ELF from the toolchain.
func tinyELF(t *testing.T) []byte {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	b, err := os.ReadFile(exe)
	require.NoError(t, err)
	_, err = elf.NewFile(bytes.NewReader(b))
	require.NoError(t, err)
	return b
}

// fakeBzImage lays out a setup header the way the kernel's build does:
// boot sector + setupSects sectors, then the protected-mode code, with the
// payload at payloadOffset inside the latter.
func fakeBzImage(setupSects byte, payloadOffset uint32, payload []byte) []byte {
	sects := int(setupSects)
	if sects == 0 {
		sects = 4
	}
	pm := (sects + 1) * 512
	img := make([]byte, pm+int(payloadOffset)+len(payload)+64)
	img[hdrSetupSects] = setupSects
	copy(img[hdrMagic:], "HdrS")
	binary.LittleEndian.PutUint16(img[hdrVersion:], 0x20f)
	binary.LittleEndian.PutUint32(img[hdrPayloadOffset:], payloadOffset)
	binary.LittleEndian.PutUint32(img[hdrPayloadLength:], uint32(len(payload)))
	copy(img[pm+int(payloadOffset):], payload)
	return img
}

func withSize(compressed []byte, n int) []byte {
	return binary.LittleEndian.AppendUint32(append([]byte(nil), compressed...), uint32(n))
}

func TestExtractVmlinux(t *testing.T) {
	vmlinux := tinyELF(t)

	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	require.NoError(t, err)
	_, err = zw.Write(vmlinux)
	require.NoError(t, err)
	require.NoError(t, zw.Close())

	enc, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	zst := enc.EncodeAll(vmlinux, nil)

	tests := []struct {
		name    string
		sects   byte
		payload []byte
	}{
		{"gzip", 27, gz.Bytes()},
		{"gzip, setup_sects 0 means 4", 0, gz.Bytes()},
		{"zstd with size trailer", 30, withSize(zst, len(vmlinux))},
		{"uncompressed", 10, vmlinux},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ExtractVmlinux(fakeBzImage(tc.sects, 0x3b4, tc.payload))
			require.NoError(t, err)
			require.Equal(t, vmlinux, got)
		})
	}
}

func TestExtractVmlinuxRejectsBadImages(t *testing.T) {
	vmlinux := tinyELF(t)
	enc, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	zst := enc.EncodeAll(vmlinux, nil)

	good := fakeBzImage(27, 0x100, withSize(zst, len(vmlinux)))
	tests := []struct {
		name   string
		image  []byte
		errMsg string
	}{
		{"too short", good[:0x100], "too short"},
		{"no magic", func() []byte { b := bytes.Clone(good); b[hdrMagic] = 'X'; return b }(), "HdrS"},
		{"old protocol", func() []byte {
			b := bytes.Clone(good)
			binary.LittleEndian.PutUint16(b[hdrVersion:], 0x206)
			return b
		}(), "predates"},
		{"payload past end", func() []byte {
			b := bytes.Clone(good)
			binary.LittleEndian.PutUint32(b[hdrPayloadLength:], 0xffffff00)
			return b
		}(), "outside"},
		{"wrong size trailer", fakeBzImage(27, 0x100, withSize(zst, len(vmlinux)+1)), "trailer says"},
		{"not ELF", fakeBzImage(27, 0x100, []byte("just some text, not compressed")), "unsupported"},
		{"lzo", fakeBzImage(27, 0x100, append(bytes.Clone(magicLzo), make([]byte, 16)...)), "unsupported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ExtractVmlinux(tc.image)
			require.ErrorContains(t, err, tc.errMsg)
		})
	}
}

// TestExtractVmlinuxLz4 uses the lz4 tool in the kernel's own way
// (`lz4 -l` legacy frame + size trailer), the format Debian's kernel uses.
func TestExtractVmlinuxLz4(t *testing.T) {
	lz4Tool, err := exec.LookPath("lz4")
	if err != nil {
		t.Skip("lz4 tool not installed (Debian package lz4): cannot make a kernel-style lz4 payload")
	}
	vmlinux := tinyELF(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "vmlinux")
	require.NoError(t, os.WriteFile(in, vmlinux, 0o644))
	out, err := exec.Command(lz4Tool, "-l", "-9", "-c", in).Output()
	require.NoError(t, err)
	got, err := ExtractVmlinux(fakeBzImage(27, 0x2c0, withSize(out, len(vmlinux))))
	require.NoError(t, err)
	require.Equal(t, vmlinux, got)
}
