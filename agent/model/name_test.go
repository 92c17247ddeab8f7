package model_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wisp-vmm/wisp/agent/model"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"web1", true},
		{"a", true},
		{"0", true},
		{"web-1-db", true},
		{"a-", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"/", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"../etc", false},
		{"Web1", false},
		{"WEB", false},
		{"-web", false},
		{"web_1", false},
		{"web.1", false},
		{"web 1", false},
		{"wéb", false},
		{"web\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := model.ValidName(tt.name)
			if tt.ok {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, model.ErrInvalid)
			var fe *model.FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, "name", fe.Field)
			assert.True(t, strings.HasPrefix(err.Error(), "name: "), err.Error())
		})
	}
}
