package agent

import (
	"encoding/json"
	"net/http"

	"github.com/wisp-vmm/wisp/agent/cost"
)

// costRoutes adds the cost routes (/v1/cost...) and the price table.
func (h *handlers) costRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/prices", h.getPrices)
	mux.HandleFunc("PUT /v1/prices", h.putPrices)
	mux.HandleFunc("GET /v1/cost", h.cost)
	mux.HandleFunc("GET /v1/cost/forecast", h.costForecast)
}

func (h *handlers) getPrices(w http.ResponseWriter, r *http.Request) {
	p, err := h.a.Prices(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// putPrices replaces the price table; fields left out take the seed's
// defaults. A bad price stores nothing.
func (h *handlers) putPrices(w http.ResponseWriter, r *http.Request) {
	var raw json.RawMessage
	if err := decodeBody(w, r, &raw, false); err != nil {
		h.fail(w, r, err)
		return
	}
	p, err := cost.ParsePrices(raw)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if p, err = h.a.SetPrices(r.Context(), p); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func costQuery(r *http.Request) CostQuery {
	q := r.URL.Query()
	return CostQuery{Month: q.Get("month"), VM: q.Get("vm"), TZ: q.Get("tz"), WhatIfs: q["what_if"]}
}

func (h *handlers) cost(w http.ResponseWriter, r *http.Request) {
	q := costQuery(r)
	if len(q.WhatIfs) > 0 {
		h.fail(w, r, invalidField("what_if", "is for /v1/cost/forecast; the month's cost is what happened"))
		return
	}
	rep, err := h.a.Cost(r.Context(), q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (h *handlers) costForecast(w http.ResponseWriter, r *http.Request) {
	f, err := h.a.CostForecast(r.Context(), costQuery(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, f)
}
