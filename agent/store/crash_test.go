package store_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/store"
)

// crashChildEnv makes the test binary a writer that appends events until
// it is killed (see TestKillDuringWrites).
const crashChildEnv = "WISP_STORE_CRASH_CHILD"

// eventsPerTx is how many events the child appends per transaction: after
// the crash the count must be a multiple of it.
const eventsPerTx = 3

// crashChild appends eventsPerTx events per transaction forever, printing
// each last seq once its transaction has committed.
func crashChild(path string) {
	s, err := store.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Big reasons make each transaction span several pages, so the kill
	// is likely to land between writes of one commit.
	reason := strings.Repeat("r", 3000)
	for {
		evs := make([]model.Event, eventsPerTx)
		for i := range evs {
			evs[i] = model.Event{VM: "vm" + strconv.Itoa(i), Kind: "test", Reason: reason, CPUs: 1, MemoryBytes: 1 << 20}
		}
		if err := s.AppendEvents(evs...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		seq, err := s.LastSeq()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(seq)
	}
}

func TestKillDuringWrites(t *testing.T) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "agent.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillDuringWrites$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())

	// Kill it while it writes, after enough commits to be sure the file
	// has grown through several pages.
	const killAfter = 60 * eventsPerTx
	var committed uint64
	lines := bufio.NewScanner(out)
	for committed < killAfter && lines.Scan() {
		committed, err = strconv.ParseUint(lines.Text(), 10, 64)
		require.NoError(t, err, "child printed %q", lines.Text())
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	waitErr := cmd.Wait()
	var exitErr *exec.ExitError
	require.ErrorAs(t, waitErr, &exitErr, "the child was killed, it did not end by itself")
	require.Equal(t, syscall.SIGKILL, exitErr.Sys().(syscall.WaitStatus).Signal())
	require.GreaterOrEqual(t, committed, uint64(killAfter))

	s, err := store.Open(path)
	require.NoError(t, err, "the store opens after a kill")
	defer s.Close()
	evs, err := s.Events(store.EventQuery{})
	require.NoError(t, err, "every event decodes")
	require.GreaterOrEqual(t, uint64(len(evs)), committed, "every committed event survived")
	assert.Zero(t, len(evs)%eventsPerTx, "transactions are whole: %d events", len(evs))
	for i, ev := range evs {
		require.Equal(t, uint64(i+1), ev.Seq, "seqs are contiguous from 1")
		require.Equal(t, "vm"+strconv.Itoa(i%eventsPerTx), ev.VM)
		require.Len(t, ev.Reason, 3000)
		require.False(t, ev.Time.IsZero())
	}
	last, err := s.LastSeq()
	require.NoError(t, err)
	assert.Equal(t, uint64(len(evs)), last)

	// And it takes new writes where it left off.
	require.NoError(t, s.AppendEvents(model.Event{VM: "vm0", Kind: "test"}))
	after, err := s.Events(store.EventQuery{AfterSeq: last})
	require.NoError(t, err)
	require.Len(t, after, 1)
	assert.Equal(t, last+1, after[0].Seq)
}
