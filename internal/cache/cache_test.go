package cache

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStagingRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "entry")
	old := filepath.Join(dir, StagingPrefix+"entry-123")
	require.NoError(t, os.MkdirAll(filepath.Join(old, "tree"), 0o755))
	other := filepath.Join(dir, StagingPrefix+"other-1")
	require.NoError(t, os.Mkdir(other, 0o755))

	tmp, err := Staging(final)
	require.NoError(t, err)
	assert.DirExists(t, tmp)
	assert.NoDirExists(t, old, "a killed run's staging directory is removed")
	assert.DirExists(t, other, "other entries' staging is not ours")
	assert.Equal(t, dir, filepath.Dir(tmp), "next to the entry, for an atomic rename")
}

func TestReplace(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "entry")
	for _, content := range []string{"one", "two"} {
		tmp, err := Staging(final)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(tmp, "f"), []byte(content), 0o644))
		require.NoError(t, Replace(tmp, final))
		b, err := os.ReadFile(filepath.Join(final, "f"))
		require.NoError(t, err)
		assert.Equal(t, content, string(b))
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no staging or old copies left")
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(context.Background(), dir, "x")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Acquire(ctx, dir, "x")
	require.ErrorIs(t, err, context.Canceled, "held by l")
	l.Unlock()
	l2, err := Acquire(context.Background(), dir, "x")
	require.NoError(t, err)
	l2.Unlock()
}

func TestRemoveRefusesRoot(t *testing.T) {
	assert.Error(t, Remove("/"))
	assert.Error(t, Remove(""))
	dir := filepath.Join(t.TempDir(), "d")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "a"), 0o755))
	require.NoError(t, Remove(dir))
	assert.NoDirExists(t, dir)
}

func TestMountsUnder(t *testing.T) {
	if _, err := os.Stat("/proc/self/mountinfo"); err != nil {
		t.Skip("no /proc/self/mountinfo")
	}
	mounts, err := MountsUnder("/proc")
	require.NoError(t, err)
	assert.Contains(t, mounts, "/proc")
	mounts, err = MountsUnder(t.TempDir())
	require.NoError(t, err)
	assert.Empty(t, mounts)
}

func TestUnescapeMount(t *testing.T) {
	assert.Equal(t, "/a b", unescapeMount(`/a\040b`))
	assert.Equal(t, `/a\x`, unescapeMount(`/a\x`))
	assert.Equal(t, `/end\04`, unescapeMount(`/end\04`))
}
