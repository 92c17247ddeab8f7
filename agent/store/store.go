// Package store keeps the host agent's state in one bbolt file: each VM's
// record (spec, desired and observed state, runtime), the event history
// that is the ledger, and small key/value buckets for later features
// (schedules, price tables). Values are JSON so the file can be read with
// generic bbolt tools when something goes wrong.
//
// Every method is one bbolt transaction, so a crash (even kill -9) leaves
// either all of a change or none of it: a VM's new state and the events
// that describe it are written together.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/wisp-vmm/wisp/agent/model"
)

// SchemaVersion is the layout this code reads and writes. A store written
// by a newer agent is refused rather than misread.
const SchemaVersion = 1

// LockTimeout is how long Open waits for another agent to let go of the
// file before giving up with ErrLocked.
const LockTimeout = 2 * time.Second

// Errors of Open. Missing records are model.ErrNotFound, duplicates
// model.ErrExists.
var (
	// ErrLocked: another process (another agent) has the store open.
	ErrLocked = errors.New("in use by another agent")
	// ErrNotStore: the file exists but is not a bbolt database, or is one
	// that belongs to something else.
	ErrNotStore = errors.New("not a wisp agent store")
	// ErrSchemaTooNew: the store was written by a newer wisp.
	ErrSchemaTooNew = errors.New("schema too new")
)

// Top-level buckets.
var (
	bucketMeta   = []byte("meta")
	bucketVMs    = []byte("vms")    // name → model.VM
	bucketEvents = []byte("events") // big-endian seq → model.Event
	// bucketVMEvents holds one bucket per VM name (kept after the VM is
	// deleted) whose keys are the seqs of that VM's events, so one VM's
	// history is read without scanning everyone's.
	bucketVMEvents = []byte("vm_events")
	// bucketKV holds one nested bucket per name given to Put, so a
	// feature's bucket can never clash with the store's own.
	bucketKV = []byte("kv")

	keySchema = []byte("schema")
)

// Store is an open agent store. Its methods are safe for concurrent use;
// bbolt runs one writing transaction at a time.
type Store struct {
	db   *bolt.DB
	path string
}

// Open opens the store at path, creating it (mode 0600: it holds VM
// specs with paths and cloud-init data) with its buckets if it does not
// exist. Only one agent may have a store open: a second Open waits
// LockTimeout and fails with ErrLocked.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: LockTimeout})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("store %s is %w (it holds the file lock)", path, ErrLocked)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrChecksum):
		return nil, fmt.Errorf("store %s is %w: %v (move it away to start afresh)", path, ErrNotStore, err)
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{db: db, path: path}
	if err := db.Update(s.initSchema); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// initSchema creates the buckets of a new store, or checks an existing
// store's schema version.
func (s *Store) initSchema(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		// A bucket cursor's first key says whether anything is there.
		if k, _ := tx.Cursor().First(); k != nil {
			return fmt.Errorf("store %s is %w: a bbolt database without wisp's meta bucket", s.path, ErrNotStore)
		}
		var err error
		if meta, err = tx.CreateBucket(bucketMeta); err != nil {
			return fmt.Errorf("store %s: create meta bucket: %w", s.path, err)
		}
		if err := meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
			return fmt.Errorf("store %s: write schema version: %w", s.path, err)
		}
	}
	raw := meta.Get(keySchema)
	version, err := strconv.Atoi(string(raw))
	if err != nil {
		return fmt.Errorf("store %s is %w: schema version %q is not a number", s.path, ErrNotStore, raw)
	}
	if version > SchemaVersion {
		return fmt.Errorf("store %s has schema version %d, this wisp knows up to %d: %w; run a newer wisp agent", s.path, version, SchemaVersion, ErrSchemaTooNew)
	}
	// Migrations from older versions go here, each in this transaction.
	for _, name := range [][]byte{bucketVMs, bucketEvents, bucketVMEvents, bucketKV} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("store %s: create bucket %s: %w", s.path, name, err)
		}
	}
	return nil
}

// Close releases the file and its lock.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return nil
}

// Path is the store's file.
func (s *Store) Path() string { return s.path }

// CreateVM writes a new VM and its "created" event together. A VM of the
// same name is model.ErrExists. ev is completed as AppendEvents does, and
// its VM, size and (when empty) kind are taken from vm.
func (s *Store) CreateVM(vm model.VM, ev model.Event) error {
	if err := model.ValidName(vm.Name); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		vms := tx.Bucket(bucketVMs)
		if vms.Get([]byte(vm.Name)) != nil {
			return fmt.Errorf("vm %s %w", vm.Name, model.ErrExists)
		}
		if err := putJSON(vms, []byte(vm.Name), vm); err != nil {
			return fmt.Errorf("vm %s: %w", vm.Name, err)
		}
		if ev.Kind == "" {
			ev.Kind = model.EventCreated
		}
		return appendEvents(tx, &vm, []model.Event{ev})
	})
}

// GetVM reads one VM; an unknown name is model.ErrNotFound.
func (s *Store) GetVM(name string) (model.VM, error) {
	var vm model.VM
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		vm, err = getVM(tx, name)
		return err
	})
	return vm, err
}

// ListVMs reads every VM, sorted by name.
func (s *Store) ListVMs() ([]model.VM, error) {
	var vms []model.VM
	err := s.db.View(func(tx *bolt.Tx) error {
		// bbolt iterates keys in byte order, which is name order.
		return tx.Bucket(bucketVMs).ForEach(func(k, v []byte) error {
			var vm model.VM
			if err := json.Unmarshal(v, &vm); err != nil {
				return fmt.Errorf("store %s: vm %s: %w", s.path, k, err)
			}
			vms = append(vms, vm)
			return nil
		})
	})
	return vms, err
}

// UpdateVM reads the VM, lets fn change it and writes it back with the
// events fn returns, all in one transaction: no other write can come in
// between, and an error from fn (returned as is, wrapped) writes nothing.
// Events are completed as AppendEvents does, their VM and size taken from
// the VM as fn left it. fn runs while the store's write lock is held, so
// it must be quick and must not call the Store.
func (s *Store) UpdateVM(name string, fn func(vm *model.VM) ([]model.Event, error)) (model.VM, error) {
	var out model.VM
	err := s.db.Update(func(tx *bolt.Tx) error {
		vm, err := getVM(tx, name)
		if err != nil {
			return err
		}
		evs, err := fn(&vm)
		if err != nil {
			return fmt.Errorf("update vm %s: %w", name, err)
		}
		if vm.Name != name {
			return fmt.Errorf("update vm %s: renaming to %q is not supported: %w", name, vm.Name, model.ErrInvalid)
		}
		if err := putJSON(tx.Bucket(bucketVMs), []byte(name), vm); err != nil {
			return fmt.Errorf("vm %s: %w", name, err)
		}
		if err := appendEvents(tx, &vm, evs); err != nil {
			return err
		}
		out = vm
		return nil
	})
	if err != nil {
		return model.VM{}, err
	}
	return out, nil
}

// DeleteVM removes the VM and appends ev (kind "deleted" when empty) in
// one transaction. The VM's events stay: they are the ledger.
func (s *Store) DeleteVM(name string, ev model.Event) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		vm, err := getVM(tx, name)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketVMs).Delete([]byte(name)); err != nil {
			return fmt.Errorf("delete vm %s: %w", name, err)
		}
		if ev.Kind == "" {
			ev.Kind = model.EventDeleted
		}
		return appendEvents(tx, &vm, []model.Event{ev})
	})
}

// AppendEvents adds events to the history in one transaction. Each gets
// the next Seq (increasing across all VMs, never reused) and, when its
// Time is zero, the current time; any Seq given is overwritten.
func (s *Store) AppendEvents(evs ...model.Event) error {
	if len(evs) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error { return appendEvents(tx, nil, evs) })
}

// EventQuery selects events.
type EventQuery struct {
	VM       string // "" means every VM
	AfterSeq uint64 // only events with a greater Seq
	Limit    int    // at most this many; 0 means all
}

// Events reads events in Seq order.
func (s *Store) Events(q EventQuery) ([]model.Event, error) {
	var evs []model.Event
	err := s.db.View(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		full := func() bool { return q.Limit > 0 && len(evs) >= q.Limit }
		read := func(k, v []byte) error {
			var ev model.Event
			if err := json.Unmarshal(v, &ev); err != nil {
				return fmt.Errorf("store %s: event %d: %w", s.path, binary.BigEndian.Uint64(k), err)
			}
			evs = append(evs, ev)
			return nil
		}
		start := seqKey(q.AfterSeq + 1)
		if q.VM == "" {
			c := events.Cursor()
			for k, v := c.Seek(start); k != nil && !full(); k, v = c.Next() {
				if err := read(k, v); err != nil {
					return err
				}
			}
			return nil
		}
		index := tx.Bucket(bucketVMEvents).Bucket([]byte(q.VM))
		if index == nil {
			return nil
		}
		c := index.Cursor()
		for k, _ := c.Seek(start); k != nil && !full(); k, _ = c.Next() {
			v := events.Get(k)
			if v == nil {
				return fmt.Errorf("store %s: vm %s: event %d is indexed but missing", s.path, q.VM, binary.BigEndian.Uint64(k))
			}
			if err := read(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	return evs, err
}

// LastSeq is the Seq of the newest event, 0 when there is none.
func (s *Store) LastSeq() (uint64, error) {
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		seq = tx.Bucket(bucketEvents).Sequence()
		return nil
	})
	return seq, err
}

func getVM(tx *bolt.Tx, name string) (model.VM, error) {
	raw := tx.Bucket(bucketVMs).Get([]byte(name))
	if raw == nil {
		return model.VM{}, fmt.Errorf("vm %s %w", name, model.ErrNotFound)
	}
	var vm model.VM
	if err := json.Unmarshal(raw, &vm); err != nil {
		return model.VM{}, fmt.Errorf("vm %s: decode: %w", name, err)
	}
	return vm, nil
}

// appendEvents writes evs with the next seqs. With vm set (events about
// that VM), each event's empty VM name and zero size come from it.
func appendEvents(tx *bolt.Tx, vm *model.VM, evs []model.Event) error {
	events := tx.Bucket(bucketEvents)
	index := tx.Bucket(bucketVMEvents)
	now := time.Now().UTC()
	for _, ev := range evs {
		if vm != nil {
			if ev.VM == "" {
				ev.VM = vm.Name
			}
			if ev.VM == vm.Name && ev.CPUs == 0 && ev.MemoryBytes == 0 {
				ev.CPUs, ev.MemoryBytes = vm.Spec.CPUs, vm.Spec.MemoryBytes
			}
		}
		if ev.Time.IsZero() {
			ev.Time = now
		}
		// NextSequence is part of the transaction: an aborted one gives
		// its numbers back, so seqs stay contiguous.
		seq, err := events.NextSequence()
		if err != nil {
			return fmt.Errorf("next event seq: %w", err)
		}
		ev.Seq = seq
		key := seqKey(seq)
		if err := putJSON(events, key, ev); err != nil {
			return fmt.Errorf("event %d: %w", seq, err)
		}
		if ev.VM == "" {
			continue
		}
		vmIndex, err := index.CreateBucketIfNotExists([]byte(ev.VM))
		if err != nil {
			return fmt.Errorf("event %d: index for vm %q: %w", seq, ev.VM, err)
		}
		if err := vmIndex.Put(key, []byte{}); err != nil {
			return fmt.Errorf("event %d: index for vm %q: %w", seq, ev.VM, err)
		}
	}
	return nil
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	return b.Put(key, raw)
}
