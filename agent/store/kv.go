package store

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/wisp-vmm/wisp/agent/model"
)

// Put stores v as JSON under key in the named bucket, creating the bucket.
// These buckets are for features that need a few records of their own
// (schedules, price tables); they live apart from the VMs and events.
func (s *Store) Put(bucket, key string, v any) error {
	if bucket == "" || key == "" {
		return fmt.Errorf("put %q/%q: bucket and key must not be empty: %w", bucket, key, model.ErrInvalid)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("put %s/%s: encode: %w", bucket, key, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketKV).CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return fmt.Errorf("put %s/%s: %w", bucket, key, err)
		}
		if err := b.Put([]byte(key), raw); err != nil {
			return fmt.Errorf("put %s/%s: %w", bucket, key, err)
		}
		return nil
	})
}

// Get decodes the JSON under key in the named bucket into v; a missing
// bucket or key is model.ErrNotFound.
func (s *Store) Get(bucket, key string, v any) error {
	return s.db.View(func(tx *bolt.Tx) error {
		var raw []byte
		if b := kvBucket(tx, bucket); b != nil {
			raw = b.Get([]byte(key))
		}
		if raw == nil {
			return fmt.Errorf("%s %s %w", bucket, key, model.ErrNotFound)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return fmt.Errorf("get %s/%s: decode: %w", bucket, key, err)
		}
		return nil
	})
}

// List calls fn with every key in the named bucket, in key order, and the
// raw JSON stored under it; a missing bucket has no keys. An error from fn
// stops the walk and is returned. raw is only valid during the call.
func (s *Store) List(bucket string, fn func(key string, raw []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := kvBucket(tx, bucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error { return fn(string(k), v) })
	})
}

// Delete removes key from the named bucket; a missing one is
// model.ErrNotFound.
func (s *Store) Delete(bucket, key string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := kvBucket(tx, bucket)
		if b == nil || b.Get([]byte(key)) == nil {
			return fmt.Errorf("%s %s %w", bucket, key, model.ErrNotFound)
		}
		if err := b.Delete([]byte(key)); err != nil {
			return fmt.Errorf("delete %s/%s: %w", bucket, key, err)
		}
		return nil
	})
}

// kvBucket is the named bucket, or nil when nothing was put in it yet.
func kvBucket(tx *bolt.Tx, bucket string) *bolt.Bucket {
	if bucket == "" {
		return nil
	}
	return tx.Bucket(bucketKV).Bucket([]byte(bucket))
}
