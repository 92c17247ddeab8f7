package store_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent/model"
)

type price struct {
	Currency string `json:"currency"`
	PerHour  string `json:"per_hour"`
}

func TestKeyValue(t *testing.T) {
	s, _ := openTemp(t)
	require.NoError(t, s.Put("prices", "cpu", price{"EUR", "0.01"}))
	require.NoError(t, s.Put("prices", "memory-gib", price{"EUR", "0.002"}))
	require.NoError(t, s.Put("prices", "cpu", price{"EUR", "0.02"}), "put replaces")
	require.NoError(t, s.Put("schedules", "office-hours", map[string]string{"on": "08:00"}))
	// A bucket named like one of the store's own does not touch it.
	require.NoError(t, s.Put("vms", "web1", "not a vm"))

	var p price
	require.NoError(t, s.Get("prices", "cpu", &p))
	assert.Equal(t, price{"EUR", "0.02"}, p)

	var keys []string
	var all []price
	require.NoError(t, s.List("prices", func(key string, raw []byte) error {
		keys = append(keys, key)
		var p price
		require.NoError(t, json.Unmarshal(raw, &p))
		all = append(all, p)
		return nil
	}))
	assert.Equal(t, []string{"cpu", "memory-gib"}, keys)
	assert.Equal(t, []price{{"EUR", "0.02"}, {"EUR", "0.002"}}, all)

	errStop := errors.New("stop")
	calls := 0
	err := s.List("prices", func(string, []byte) error { calls++; return errStop })
	assert.ErrorIs(t, err, errStop)
	assert.Equal(t, 1, calls)

	require.NoError(t, s.List("never-used", func(string, []byte) error {
		t.Error("a missing bucket has no keys")
		return nil
	}))

	_, err = s.GetVM("web1")
	assert.ErrorIs(t, err, model.ErrNotFound, "kv bucket \"vms\" is not the VM table")

	require.NoError(t, s.Delete("prices", "cpu"))
	assert.ErrorIs(t, s.Get("prices", "cpu", &p), model.ErrNotFound)

	tests := []struct {
		name string
		err  error
		want error
	}{
		{"get missing key", s.Get("prices", "gpu", &p), model.ErrNotFound},
		{"get missing bucket", s.Get("nope", "cpu", &p), model.ErrNotFound},
		{"delete missing key", s.Delete("prices", "cpu"), model.ErrNotFound},
		{"delete missing bucket", s.Delete("nope", "cpu"), model.ErrNotFound},
		{"put empty bucket", s.Put("", "k", 1), model.ErrInvalid},
		{"put empty key", s.Put("b", "", 1), model.ErrInvalid},
		{"put unencodable", s.Put("b", "k", func() {}), nil},
		{"get into wrong type", s.Get("prices", "memory-gib", new(int)), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Error(t, tt.err)
			if tt.want != nil {
				assert.ErrorIs(t, tt.err, tt.want)
			}
		})
	}
}
