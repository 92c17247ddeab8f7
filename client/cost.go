package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/wisp-vmm/wisp/agent"
	"github.com/wisp-vmm/wisp/agent/cost"
)

// Prices returns the agent's price table.
func (c *Client) Prices(ctx context.Context) (cost.Prices, error) {
	var p cost.Prices
	err := c.call(ctx, http.MethodGet, "/v1/prices", nil, nil, &p, http.StatusOK)
	return p, err
}

// SetPrices replaces the price table and returns it as stored. A price
// that is negative or not a number is an *Error naming the field, and
// nothing is stored.
func (c *Client) SetPrices(ctx context.Context, p cost.Prices) (cost.Prices, error) {
	var out cost.Prices
	err := c.call(ctx, http.MethodPut, "/v1/prices", nil, p, &out, http.StatusOK)
	return out, err
}

func costValues(q agent.CostQuery) url.Values {
	v := url.Values{}
	for key, val := range map[string]string{"month": q.Month, "vm": q.VM, "tz": q.TZ} {
		if val != "" {
			v.Set(key, val)
		}
	}
	for _, w := range q.WhatIfs {
		v.Add("what_if", w)
	}
	return v
}

// Cost returns what each VM cost in the month q names.
func (c *Client) Cost(ctx context.Context, q agent.CostQuery) (cost.Report, error) {
	var r cost.Report
	err := c.call(ctx, http.MethodGet, "/v1/cost", costValues(q), nil, &r, http.StatusOK)
	return r, err
}

// CostForecast returns the month's cost with the VMs as they are, and
// with q's what-ifs.
func (c *Client) CostForecast(ctx context.Context, q agent.CostQuery) (cost.Forecast, error) {
	var f cost.Forecast
	err := c.call(ctx, http.MethodGet, "/v1/cost/forecast", costValues(q), nil, &f, http.StatusOK)
	return f, err
}

// UpdatePrices stores base (the table Prices returned) with the named
// fields changed (the JSON names, as `wisp cost prices --set
// cpu_ghz_hour=0.10` gives them). The values go to the agent as written, so the agent
// alone says what a valid price is: one that is negative or not a number
// is an *Error naming the field, and nothing is stored.
func (c *Client) UpdatePrices(ctx context.Context, base cost.Prices, set map[string]string) (cost.Prices, error) {
	body := map[string]any{}
	for _, row := range base.Rows() {
		body[row[0]] = row[1]
	}
	body["only_running"] = base.OnlyRunning
	for k, v := range set {
		body[k] = v
		if b, err := strconv.ParseBool(v); err == nil && k == "only_running" {
			body[k] = b
		}
	}
	var out cost.Prices
	err := c.call(ctx, http.MethodPut, "/v1/prices", nil, body, &out, http.StatusOK)
	return out, err
}
