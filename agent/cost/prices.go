// Package cost says what every VM costs, from the agent's event history.
//
// # The seed's unit
//
// The price table's defaults are the seed's arithmetic: $0.25 an hour buys
// 1 GHz of CPU, 1 GB of RAM, 1000 GB of disk and 100 GB of traffic in the
// month, $180 for a 30-day month always on, $120 when off 8 hours every
// night. The $0.25 is split per resource so that an administrator can
// change each part: CPU $0.10 per GHz-hour (one vCPU counts as VCPUGHz,
// 1 GHz by default), memory $0.10 per GiB-hour (binary, as memory is sold),
// disk $0.03 per 1000 GB-hour (10^12 bytes, as disks are sold) and
// traffic $0.02 per hour.
//
// # Traffic
//
// The seed scales everything with running time, including the 100 GB of
// traffic; a price per GB does not, and would make "$120 when off at
// night" false for a VM that moves the same bytes in fewer hours. So
// traffic is priced the way hosting offers sell it: a network port billed
// per hour like the other resources (TrafficHour), which includes
// TrafficIncludedGB (100 GB, 10^9 bytes each) in the month, and only the
// bytes beyond that at TrafficGB per GB ($0.144 by default: what the
// included 100 GB cost over a 30-day month, 0.02 × 720 / 100). Every seed
// figure stays exact, and a VM that moves much more pays for it. The
// allowance is the month's, whatever the hours the VM ran. Traffic enters
// the ledger as "traffic" events (model.EventTraffic) carrying a byte
// count.
//
// # What is charged when
//
// As in the seed, a VM that is off costs nothing: with OnlyRunning (the
// default, OpenNebula's SHOWBACK_ONLY_RUNNING) CPU, memory, disk and the
// network port are charged while the VM is observed running. Without it,
// allocated disk is charged for as long as the VM exists, and CPU, memory
// and the port while it holds them: running, paused, starting, stopping.
//
// Money is exact decimal (shopspring/decimal), never float: usage is kept
// as exact unit-seconds and divided once per amount, rounded to
// AmountPlaces; tables show cents.
package cost

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/shopspring/decimal"

	"github.com/wisp-vmm/wisp/agent/model"
)

// Store bucket and key the agent keeps the price table under.
const (
	PricesBucket = "prices"
	PricesKey    = "table"
)

// Prices is the price table. Money is in dollars.
type Prices struct {
	// CPUGHzHour is the price of 1 GHz of CPU for an hour.
	CPUGHzHour decimal.Decimal `json:"cpu_ghz_hour"`
	// VCPUGHz is how many GHz one vCPU counts as.
	VCPUGHz decimal.Decimal `json:"vcpu_ghz"`
	// MemoryGiBHour is the price of 1 GiB (2^30 bytes) of memory for an
	// hour.
	MemoryGiBHour decimal.Decimal `json:"memory_gib_hour"`
	// DiskTBHour is the price of 1000 GB (10^12 bytes) of disk for an
	// hour.
	DiskTBHour decimal.Decimal `json:"disk_tb_hour"`
	// TrafficHour is the price of the network port for an hour; it
	// includes TrafficIncludedGB of traffic in the month.
	TrafficHour decimal.Decimal `json:"traffic_hour"`
	// TrafficIncludedGB is the traffic (GB, 10^9 bytes) each VM may move
	// in a month before TrafficGB applies.
	TrafficIncludedGB decimal.Decimal `json:"traffic_included_gb"`
	// TrafficGB is the price of one GB beyond the included traffic.
	TrafficGB decimal.Decimal `json:"traffic_gb"`
	// OnlyRunning charges a VM only while it runs (the seed's
	// arithmetic). False: disk for as long as the VM exists, CPU, memory
	// and the port while paused, starting or stopping too.
	OnlyRunning bool `json:"only_running"`
}

// DefaultPrices is the seed's unit, split per resource: 1 vCPU, 1 GiB,
// 1000 GB of disk and up to 100 GB of traffic cost $0.25 an hour.
func DefaultPrices() Prices {
	return Prices{
		CPUGHzHour:        decimal.RequireFromString("0.10"),
		VCPUGHz:           decimal.RequireFromString("1"),
		MemoryGiBHour:     decimal.RequireFromString("0.10"),
		DiskTBHour:        decimal.RequireFromString("0.03"),
		TrafficHour:       decimal.RequireFromString("0.02"),
		TrafficIncludedGB: decimal.RequireFromString("100"),
		TrafficGB:         decimal.RequireFromString("0.144"),
		OnlyRunning:       true,
	}
}

// decimalFields are the table's numbers by their JSON names, in the order
// tables show them.
func (p *Prices) decimalFields() []struct {
	name string
	v    *decimal.Decimal
} {
	return []struct {
		name string
		v    *decimal.Decimal
	}{
		{"cpu_ghz_hour", &p.CPUGHzHour},
		{"vcpu_ghz", &p.VCPUGHz},
		{"memory_gib_hour", &p.MemoryGiBHour},
		{"disk_tb_hour", &p.DiskTBHour},
		{"traffic_hour", &p.TrafficHour},
		{"traffic_included_gb", &p.TrafficIncludedGB},
		{"traffic_gb", &p.TrafficGB},
	}
}

// Keys are the table's field names, as Set and the JSON take them.
func Keys() []string {
	var p Prices
	var keys []string
	for _, f := range p.decimalFields() {
		keys = append(keys, f.name)
	}
	return append(keys, "only_running")
}

// Set changes the field named key to value, as `wisp cost prices --set
// key=value` gives it. A number must be a plain decimal of 0 or more (a
// price that is negative or not a number is a *model.FieldError naming
// the key); only_running takes true or false.
func (p *Prices) Set(key, value string) error {
	if key == "only_running" {
		b, err := strconv.ParseBool(value)
		if err != nil {
			return &model.FieldError{Field: key, Msg: fmt.Sprintf("%q is not true or false", value)}
		}
		p.OnlyRunning = b
		return nil
	}
	for _, f := range p.decimalFields() {
		if f.name == key {
			d, err := parseAmount(key, value)
			if err != nil {
				return err
			}
			*f.v = d
			return nil
		}
	}
	return &model.FieldError{Field: key, Msg: "unknown price; known: " + strings.Join(Keys(), ", ")}
}

// parseAmount reads a non-negative decimal: digits with an optional
// fraction, nothing else (no exponent, sign or spaces), so what is stored
// is what the administrator wrote.
func parseAmount(key, s string) (decimal.Decimal, error) {
	if strings.HasPrefix(strings.TrimSpace(s), "-") {
		return decimal.Decimal{}, &model.FieldError{Field: key, Msg: fmt.Sprintf("%q is negative; give a price of 0 or more", s)}
	}
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || !allDigits(whole) || (hasDot && (frac == "" || !allDigits(frac))) {
		return decimal.Decimal{}, &model.FieldError{Field: key, Msg: fmt.Sprintf("%q is not a number; give a decimal such as 0.10", s)}
	}
	return decimal.RequireFromString(s), nil
}

func allDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// ParsePrices reads a price table as the API receives it: a JSON object
// whose numbers are decimal strings (or JSON numbers, read digit for
// digit). Fields left out keep their default. The error is one
// *model.FieldError naming the first bad field.
func ParsePrices(raw []byte) (Prices, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return Prices{}, &model.FieldError{Field: "body", Msg: "want a JSON object of prices: " + err.Error()}
	}
	p := DefaultPrices()
	keys := Keys()
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	// Known fields in table order first, so the error names the same
	// field every time.
	slices.SortFunc(names, func(a, b string) int {
		ia, ib := slices.Index(keys, a), slices.Index(keys, b)
		if ia < 0 {
			ia = len(keys)
		}
		if ib < 0 {
			ib = len(keys)
		}
		if ia != ib {
			return ia - ib
		}
		return strings.Compare(a, b)
	})
	for _, k := range names {
		v := strings.TrimSpace(string(fields[k]))
		if k == "only_running" {
			if v != "true" && v != "false" {
				return Prices{}, &model.FieldError{Field: k, Msg: fmt.Sprintf("%s; want true or false", v)}
			}
		} else if strings.HasPrefix(v, `"`) {
			if err := json.Unmarshal(fields[k], &v); err != nil {
				return Prices{}, &model.FieldError{Field: k, Msg: "not a JSON string: " + err.Error()}
			}
		}
		if err := p.Set(k, v); err != nil {
			return Prices{}, err
		}
	}
	return p, nil
}

// Rows are the table's fields and values as text, in table order.
func (p Prices) Rows() [][2]string {
	var rows [][2]string
	for _, f := range p.decimalFields() {
		rows = append(rows, [2]string{f.name, f.v.String()})
	}
	return append(rows, [2]string{"only_running", strconv.FormatBool(p.OnlyRunning)})
}

// UnitHour is what the seed's unit (1 vCPU, 1 GiB, 1000 GB of disk, the
// network port with its included traffic) costs an hour at p.
func (p Prices) UnitHour() decimal.Decimal {
	return p.CPUGHzHour.Mul(p.VCPUGHz).Add(p.MemoryGiBHour).Add(p.DiskTBHour).Add(p.TrafficHour)
}
