package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/wisp-vmm/wisp/agent/model"
	"github.com/wisp-vmm/wisp/agent/store"
)

func openTemp(t *testing.T) (*store.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.db")
	s, err := store.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s, path
}

var created = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newVM(name string) model.VM {
	return model.VM{
		Name:      name,
		Spec:      model.Spec{CPUs: 2, MemoryBytes: 512 << 20},
		Desired:   model.DesiredStopped,
		Observed:  model.ObservedStopped,
		Class:     model.ClassReserved,
		CreatedAt: created,
	}
}

func TestVMRoundTrip(t *testing.T) {
	s, _ := openTemp(t)
	on := true
	full := model.VM{
		Name: "web1",
		Spec: model.Spec{
			Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyS0", CPUs: 4, MemoryBytes: 1 << 30,
			Disks: []string{"/a.img,ro"}, Nets: []string{"user"}, RNG: &on, Command: []string{"sh"},
		},
		Desired: model.DesiredRunning, Observed: model.ObservedRunning, Reason: "started",
		Autostart: true, Priority: 7, Class: model.ClassBestEffort,
		Labels:    map[string]string{"team": "web"},
		CreatedAt: created,
		Runtime: &model.Runtime{
			PID: 4242, StartTicks: 123456, Socket: "/run/wisp/vms/web1/api.sock",
			Dir: "/run/wisp/vms/web1", Backend: "kvm", StartedAt: created.Add(time.Minute),
		},
	}
	for _, name := range []string{"db", "web1", "cache"} {
		vm := newVM(name)
		if name == "web1" {
			vm = full
		}
		require.NoError(t, s.CreateVM(vm, model.Event{Reason: "user create"}))
	}

	got, err := s.GetVM("web1")
	require.NoError(t, err)
	assert.Equal(t, full, got)

	list, err := s.ListVMs()
	require.NoError(t, err)
	var names []string
	for _, vm := range list {
		names = append(names, vm.Name)
	}
	assert.Equal(t, []string{"cache", "db", "web1"}, names)
	assert.Equal(t, full, list[2])

	evs, err := s.Events(store.EventQuery{VM: "web1"})
	require.NoError(t, err)
	require.Len(t, evs, 1)
	assert.Equal(t, uint64(2), evs[0].Seq)
	assert.Equal(t, model.EventCreated, evs[0].Kind)
	assert.Equal(t, "web1", evs[0].VM)
	assert.Equal(t, "user create", evs[0].Reason)
	assert.Equal(t, 4, evs[0].CPUs, "the event carries the VM's size")
	assert.Equal(t, uint64(1<<30), evs[0].MemoryBytes)
	assert.False(t, evs[0].Time.IsZero())
}

func TestEmptyStore(t *testing.T) {
	s, path := openTemp(t)
	list, err := s.ListVMs()
	require.NoError(t, err)
	assert.Empty(t, list)
	evs, err := s.Events(store.EventQuery{})
	require.NoError(t, err)
	assert.Empty(t, evs)
	seq, err := s.LastSeq()
	require.NoError(t, err)
	assert.Zero(t, seq)

	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}

func TestErrors(t *testing.T) {
	s, _ := openTemp(t)
	require.NoError(t, s.CreateVM(newVM("web1"), model.Event{}))
	noop := func(*model.VM) ([]model.Event, error) { return nil, nil }
	tests := []struct {
		name    string
		do      func() error
		wantIs  error
		wantMsg string
	}{
		{"create twice", func() error { return s.CreateVM(newVM("web1"), model.Event{}) }, model.ErrExists, "vm web1 already exists"},
		{"create bad name", func() error { return s.CreateVM(newVM("../x"), model.Event{}) }, model.ErrInvalid, "name: "},
		{"get unknown", func() error { _, err := s.GetVM("nope"); return err }, model.ErrNotFound, "vm nope not found"},
		{"update unknown", func() error { _, err := s.UpdateVM("nope", noop); return err }, model.ErrNotFound, "vm nope not found"},
		{"delete unknown", func() error { return s.DeleteVM("nope", model.Event{}) }, model.ErrNotFound, "vm nope not found"},
		{"rename in update", func() error {
			_, err := s.UpdateVM("web1", func(vm *model.VM) ([]model.Event, error) { vm.Name = "web2"; return nil, nil })
			return err
		}, model.ErrInvalid, "renaming"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.wantIs)
			assert.Contains(t, err.Error(), tt.wantMsg)
		})
	}
	seq, err := s.LastSeq()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), seq, "failed calls wrote no events")
	_, err = s.GetVM("web2")
	assert.ErrorIs(t, err, model.ErrNotFound)
}

func TestUpdateVMWritesVMAndEventsTogether(t *testing.T) {
	s, _ := openTemp(t)
	require.NoError(t, s.CreateVM(newVM("web1"), model.Event{}))
	at := created.Add(time.Hour)

	got, err := s.UpdateVM("web1", func(vm *model.VM) ([]model.Event, error) {
		evs := vm.SetDesired(model.DesiredRunning, "user start")
		evs = append(evs, vm.SetObserved(model.ObservedStarting, "spawned")...)
		evs = append(evs, model.Event{Kind: model.EventResized, Time: at, CPUs: 8, MemoryBytes: 8 << 30})
		return evs, nil
	})
	require.NoError(t, err)
	assert.Equal(t, model.DesiredRunning, got.Desired)
	assert.Equal(t, model.ObservedStarting, got.Observed)
	stored, err := s.GetVM("web1")
	require.NoError(t, err)
	assert.Equal(t, got, stored)

	evs, err := s.Events(store.EventQuery{AfterSeq: 1})
	require.NoError(t, err)
	require.Len(t, evs, 3)
	for i, ev := range evs {
		assert.Equal(t, uint64(i+2), ev.Seq)
		assert.Equal(t, "web1", ev.VM, "the store fills the VM name")
		assert.False(t, ev.Time.IsZero(), "the store fills the time")
	}
	assert.Equal(t, model.Event{Seq: 2, Time: evs[0].Time, VM: "web1", Kind: model.EventDesired, From: "stopped", To: "running", Reason: "user start", CPUs: 2, MemoryBytes: 512 << 20}, evs[0])
	assert.Equal(t, "starting", evs[1].To)
	assert.True(t, at.Equal(evs[2].Time), "a given time is kept")
	assert.Equal(t, 8, evs[2].CPUs, "a given size is kept")
}

func TestUpdateVMErrorWritesNothing(t *testing.T) {
	s, _ := openTemp(t)
	require.NoError(t, s.CreateVM(newVM("web1"), model.Event{}))
	errRefused := errors.New("refused by fn")

	_, err := s.UpdateVM("web1", func(vm *model.VM) ([]model.Event, error) {
		evs := vm.SetObserved(model.ObservedRunning, "would be")
		vm.Priority = 99
		return evs, errRefused
	})
	require.Error(t, err)
	assert.ErrorIs(t, err, errRefused)

	vm, err := s.GetVM("web1")
	require.NoError(t, err)
	assert.Equal(t, newVM("web1"), vm)
	evs, err := s.Events(store.EventQuery{})
	require.NoError(t, err)
	assert.Len(t, evs, 1, "only the created event")
	seq, err := s.LastSeq()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), seq)

	require.NoError(t, s.AppendEvents(model.Event{VM: "web1", Kind: "observed"}))
	evs, err = s.Events(store.EventQuery{AfterSeq: 1})
	require.NoError(t, err)
	require.Len(t, evs, 1)
	assert.Equal(t, uint64(2), evs[0].Seq, "the aborted update used up no seq")
}

func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	s, _ := openTemp(t)
	require.NoError(t, s.CreateVM(newVM("web1"), model.Event{}))
	const writers = 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UpdateVM("web1", func(vm *model.VM) ([]model.Event, error) {
				vm.Priority++
				return []model.Event{{Kind: "test", Reason: strconv.Itoa(vm.Priority)}}, nil
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	vm, err := s.GetVM("web1")
	require.NoError(t, err)
	assert.Equal(t, writers, vm.Priority)

	// Each writer saw a different count: none read a stale VM.
	evs, err := s.Events(store.EventQuery{VM: "web1", AfterSeq: 1})
	require.NoError(t, err)
	var seen, want []int
	for i, ev := range evs {
		n, err := strconv.Atoi(ev.Reason)
		require.NoError(t, err)
		seen = append(seen, n)
		want = append(want, i+1)
	}
	assert.Len(t, want, writers)
	assert.Equal(t, want, seen, "in seq order the counts are 1, 2, ...")
}

func TestHistoryKeptAfterDelete(t *testing.T) {
	s, _ := openTemp(t)
	require.NoError(t, s.CreateVM(newVM("web1"), model.Event{}))
	require.NoError(t, s.CreateVM(newVM("db"), model.Event{}))
	_, err := s.UpdateVM("web1", func(vm *model.VM) ([]model.Event, error) {
		return vm.SetObserved(model.ObservedCrashed, "exit 84"), nil
	})
	require.NoError(t, err)
	require.NoError(t, s.DeleteVM("web1", model.Event{Reason: "user delete"}))

	_, err = s.GetVM("web1")
	assert.ErrorIs(t, err, model.ErrNotFound)
	list, err := s.ListVMs()
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, "db", list[0].Name)

	evs, err := s.Events(store.EventQuery{VM: "web1"})
	require.NoError(t, err)
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ev.Kind)
	}
	assert.Equal(t, []string{"created", "observed", "deleted"}, kinds)
	assert.Equal(t, "user delete", evs[2].Reason)
	assert.Equal(t, 2, evs[2].CPUs, "the deleted event carries the size")

	// A new VM of the same name continues the name's history.
	require.NoError(t, s.CreateVM(newVM("web1"), model.Event{}))
	evs, err = s.Events(store.EventQuery{VM: "web1"})
	require.NoError(t, err)
	assert.Len(t, evs, 4)
}

func TestEventsQuery(t *testing.T) {
	s, _ := openTemp(t)
	// seqs: 1 a, 2 b, 3 a, 4 host (no VM), 5 b, 6 a
	for _, vm := range []string{"a", "b", "a", "", "b", "a"} {
		require.NoError(t, s.AppendEvents(model.Event{VM: vm, Kind: "test", Seq: 999}))
	}
	tests := []struct {
		name string
		q    store.EventQuery
		want []uint64
	}{
		{"all", store.EventQuery{}, []uint64{1, 2, 3, 4, 5, 6}},
		{"after", store.EventQuery{AfterSeq: 4}, []uint64{5, 6}},
		{"limit", store.EventQuery{Limit: 2}, []uint64{1, 2}},
		{"after and limit", store.EventQuery{AfterSeq: 2, Limit: 3}, []uint64{3, 4, 5}},
		{"one vm", store.EventQuery{VM: "a"}, []uint64{1, 3, 6}},
		{"one vm after", store.EventQuery{VM: "a", AfterSeq: 1}, []uint64{3, 6}},
		{"one vm limit", store.EventQuery{VM: "b", Limit: 1}, []uint64{2}},
		{"one vm after the end", store.EventQuery{VM: "b", AfterSeq: 5}, nil},
		{"unknown vm", store.EventQuery{VM: "zzz"}, nil},
		{"after the end", store.EventQuery{AfterSeq: 6}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := s.Events(tt.q)
			require.NoError(t, err)
			var seqs []uint64
			for _, ev := range evs {
				seqs = append(seqs, ev.Seq)
				if tt.q.VM != "" {
					assert.Equal(t, tt.q.VM, ev.VM)
				}
			}
			assert.Equal(t, tt.want, seqs)
		})
	}
	seq, err := s.LastSeq()
	require.NoError(t, err)
	assert.Equal(t, uint64(6), seq)
}

func TestSeqIncreasesAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	var last uint64
	for round := range 3 {
		s, err := store.Open(path)
		require.NoError(t, err)
		seq, err := s.LastSeq()
		require.NoError(t, err)
		assert.Equal(t, last, seq, "round %d", round)
		require.NoError(t, s.AppendEvents(model.Event{VM: "a", Kind: "test"}, model.Event{VM: "b", Kind: "test"}))
		evs, err := s.Events(store.EventQuery{AfterSeq: last})
		require.NoError(t, err)
		require.Len(t, evs, 2)
		assert.Equal(t, []uint64{last + 1, last + 2}, []uint64{evs[0].Seq, evs[1].Seq})
		last = evs[1].Seq
		require.NoError(t, s.Close())
	}
	assert.Equal(t, uint64(6), last)
}

func TestSecondOpenIsLocked(t *testing.T) {
	s, path := openTemp(t)
	require.NoError(t, s.CreateVM(newVM("web1"), model.Event{}))

	second, err := store.Open(path)
	require.Error(t, err)
	assert.Nil(t, second)
	assert.ErrorIs(t, err, store.ErrLocked)
	assert.Contains(t, err.Error(), "store "+path+" is in use by another agent")

	// The first agent goes on working.
	_, err = s.GetVM("web1")
	require.NoError(t, err)
	require.NoError(t, s.Close())
	third, err := store.Open(path)
	require.NoError(t, err, "the lock is released on Close")
	require.NoError(t, third.Close())
}

func TestOpenRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	otherBolt := filepath.Join(dir, "other.db")
	db, err := bolt.Open(otherBolt, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("widgets"))
		return err
	}))
	require.NoError(t, db.Close())

	newer := filepath.Join(dir, "newer.db")
	s, err := store.Open(newer)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	setSchema(t, newer, "2")

	garbled := filepath.Join(dir, "garbled.db")
	s, err = store.Open(garbled)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	setSchema(t, garbled, "one")

	tests := []struct {
		name    string
		path    string
		content []byte // written first when set
		wantIs  error
		wantMsg string
	}{
		{"text file", filepath.Join(dir, "notes.txt"), []byte("hello\n"), store.ErrNotStore, "is not a wisp agent store: invalid database"},
		{"large junk", filepath.Join(dir, "junk"), make([]byte, 64<<10), store.ErrNotStore, "is not a wisp agent store"},
		{"another program's bbolt", otherBolt, nil, store.ErrNotStore, "without wisp's meta bucket"},
		{"newer schema", newer, nil, store.ErrSchemaTooNew, "has schema version 2, this wisp knows up to 1"},
		{"garbled schema", garbled, nil, store.ErrNotStore, `schema version "one" is not a number`},
		{"directory", dir, nil, nil, "open store " + dir},
		{"missing parent", filepath.Join(dir, "no", "agent.db"), nil, os.ErrNotExist, "open store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.content != nil {
				require.NoError(t, os.WriteFile(tt.path, tt.content, 0o600))
			}
			s, err := store.Open(tt.path)
			require.Error(t, err)
			assert.Nil(t, s)
			if tt.wantIs != nil {
				assert.ErrorIs(t, err, tt.wantIs)
			}
			assert.Contains(t, err.Error(), tt.wantMsg)
			assert.Contains(t, err.Error(), tt.path)
			if tt.content != nil {
				after, err := os.ReadFile(tt.path)
				require.NoError(t, err)
				assert.Equal(t, tt.content, after, "a refused file is left as it was")
			}
		})
	}
}

// setSchema overwrites a store's schema version with raw bbolt, as a newer
// or broken writer would.
func setSchema(t *testing.T, path, version string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte(version))
	}))
	require.NoError(t, db.Close())
}
