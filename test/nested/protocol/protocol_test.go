package protocol

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		line    string
		marker  bool
		want    Marker
		wantErr bool
	}{
		{"--- PASS: TestX (0.00s)", false, Marker{}, false},
		{"  " + Begin("kvm"), false, Marker{}, false},
		{Begin("vmm/kvmvm") + "\r", true, Marker{Kind: KindBegin, Text: "vmm/kvmvm"}, false},
		{End("vmm/kvmvm", 1), true, Marker{Kind: KindEnd, Text: "vmm/kvmvm", Code: 1}, false},
		{End("a b", -1), true, Marker{Kind: KindEnd, Text: "a b", Code: -1}, false},
		{Done(), true, Marker{Kind: KindDone}, false},
		{Line(KindKVM, "api=12"), true, Marker{Kind: KindKVM, Text: "api=12"}, false},
		{Line(KindError, "no /dev/kvm"), true, Marker{Kind: KindError, Text: "no /dev/kvm"}, false},
		{Prefix + "END kvm", true, Marker{}, true},
		{Prefix + "END kvm exit=x", true, Marker{}, true},
		{Prefix + "WHAT now", true, Marker{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			m, ok, err := ParseLine(tt.line)
			assert.Equal(t, tt.marker, ok)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, m)
		})
	}
}
