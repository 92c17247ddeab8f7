package image

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzDebugfsOutput feeds arbitrary text to the parsers of debugfs's
// `stat` and `ls -p` output. That output describes an image a guest may
// have written (file names, link targets, sizes), so the parsers must
// never panic, and what they accept must be well formed: a known type
// word, sizes that are not negative, names that are one path element.
func FuzzDebugfsOutput(f *testing.F) {
	f.Add([]byte(`Inode: 19   Type: symlink    Mode:  0777   Flags: 0x0
Generation: 0    Version: 0x00000000:00000000
User:     0   Group:     0   Project:     0   Size: 28
Fragment:  Address: 0    Number: 0    Size: 0
Fast link dest: "vmlinuz-6.1.0-50-cloud-amd64"
`))
	f.Add([]byte("Inode: 26   Type: character special    Mode:  0666   Flags: 0x0\nUser: 0 Size: 0\n"))
	f.Add([]byte("Inode: 12   Type: regular    Mode:  0644   Flags: 0x80000\nUser: 0 Size: 99999999999999999999\n"))
	f.Add([]byte(`/13/040755/0/0/.//
/2/040755/0/0/..//
/17/100644/0/0/initrd.img-6.1.0-50-cloud-amd64/15285424/
/19/120777/0/0/vmlinuz/28/
garbage
/x/notoctal/0/0/bad/1/
/20/100644/0/0/negative/-1/
/21/100644/0/0/not a size/1x/
`))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, out []byte) {
		if in, err := parseStat(out); err == nil {
			require.NotEmpty(t, in.Type)
			require.Equal(t, -1, strings.IndexFunc(in.Type, func(r rune) bool { return r != ' ' && (r < 'a' || r > 'z') }), "type %q", in.Type)
			require.GreaterOrEqual(t, in.Size, int64(0))
			require.NotContains(t, in.LinkDest, "\n")
		}
		for _, e := range parseList(out) {
			require.NotEmpty(t, e.Name)
			require.NotContains(t, []string{".", ".."}, e.Name)
			require.False(t, strings.ContainsAny(e.Name, "/\n"), "name %q", e.Name)
			require.GreaterOrEqual(t, e.Size, int64(0), "entry %q", e.Name)
		}
	})
}
