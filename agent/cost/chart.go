package cost

import (
	"fmt"
	"html"
	"io"
	"strings"

	"github.com/shopspring/decimal"
)

// Bars writes the cost of each day as text bars, width characters for
// the dearest day, in eighths of a character.
func Bars(w io.Writer, days []Day, width int) error {
	top := maxCost(days)
	eighths := []string{"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"}
	for _, d := range days {
		n := 0
		if top.IsPositive() {
			n = int(d.Cost.Mul(decimal.NewFromInt(int64(width*8))).DivRound(top, 0).IntPart())
		}
		bar := strings.Repeat("█", n/8) + eighths[n%8]
		if _, err := fmt.Fprintf(w, "%s %-*s %s\n", d.Date, width, bar, Money(d.Cost)); err != nil {
			return err
		}
	}
	return nil
}

// SVG writes a bar chart of the cost of each day of r.
func SVG(w io.Writer, r Report) error {
	const (
		barW, gap     = 18, 4
		left, bottom  = 60, 40
		plotH, topPad = 240, 30
	)
	width := left + len(r.Days)*(barW+gap) + 20
	height := topPad + plotH + bottom
	top := maxCost(r.Days)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<title>%s</title>`+"\n", html.EscapeString("Cost per day, "+r.Month+": "+Money(r.Total)))
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">%s</text>`+"\n", left, html.EscapeString("Cost per day, "+r.Month+" ("+r.Zone+"), total "+Money(r.Total)))
	base := topPad + plotH
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444"/>`+"\n", left, base, width-10, base)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-6, topPad+4, Money(top))
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">$0</text>`+"\n", left-6, base+4)
	for i, d := range r.Days {
		h := 0
		if top.IsPositive() {
			h = int(d.Cost.Mul(decimal.NewFromInt(plotH)).DivRound(top, 0).IntPart())
		}
		x := left + gap + i*(barW+gap)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="#4a7bd0"><title>%s %s</title></rect>`+"\n",
			x, base-h, barW, h, d.Date, Money(d.Cost))
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", x+barW/2, base+14, strings.TrimLeft(d.Date[len(d.Date)-2:], "0"))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func maxCost(days []Day) decimal.Decimal {
	top := decimal.Zero
	for _, d := range days {
		top = decimal.Max(top, d.Cost)
	}
	return top
}
