package cost

import (
	"encoding/xml"
	"strings"
	"testing"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBars(t *testing.T) {
	days := []Day{
		{Date: "2026-04-01", Cost: decimal.RequireFromString("6")},
		{Date: "2026-04-02", Cost: decimal.RequireFromString("3")},
		{Date: "2026-04-03", Cost: decimal.Zero},
	}
	var b strings.Builder
	require.NoError(t, Bars(&b, days, 4))
	assert.Equal(t, "2026-04-01 ████ $6.00\n2026-04-02 ██   $3.00\n2026-04-03      $0.00\n", b.String())
}

func TestSVGIsWellFormed(t *testing.T) {
	r := Report{Month: "2026-04", Zone: "UTC", Total: decimal.RequireFromString("9"), Days: []Day{
		{Date: "2026-04-01", Cost: decimal.RequireFromString("6")},
		{Date: "2026-04-02", Cost: decimal.RequireFromString("3")},
	}}
	var b strings.Builder
	require.NoError(t, SVG(&b, r))
	dec := xml.NewDecoder(strings.NewReader(b.String()))
	rects := map[string]string{}
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			var y, h string
			for _, a := range se.Attr {
				switch a.Name.Local {
				case "height":
					h = a.Value
				case "y":
					y = a.Value
				}
			}
			rects[y] = h
		}
	}
	// The dearer day fills the plot (240), the other half of it.
	assert.Equal(t, map[string]string{"30": "240", "150": "120"}, rects)
}
