package agent

import (
	"net/http"

	"github.com/wisp-vmm/wisp/agent/policy"
)

// defaultNextCount is how many occurrences of each schedule
// GET /v1/schedules/next shows unless asked.
const defaultNextCount = 3

// scheduleRoutes adds the schedule routes (/v1/schedules...).
func (h *handlers) scheduleRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/schedules", h.listSchedules)
	mux.HandleFunc("POST /v1/schedules", h.addSchedule)
	// "next" is more specific than {id}, and no schedule may be called so.
	mux.HandleFunc("GET /v1/schedules/next", h.nextSchedules)
	mux.HandleFunc("GET /v1/schedules/{id}", h.getSchedule)
	mux.HandleFunc("DELETE /v1/schedules/{id}", h.deleteSchedule)
}

func (h *handlers) listSchedules(w http.ResponseWriter, r *http.Request) {
	scheds, err := h.a.Schedules(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, scheds)
}

func (h *handlers) addSchedule(w http.ResponseWriter, r *http.Request) {
	var req policy.Schedule
	if err := decodeBody(w, r, &req, false); err != nil {
		h.fail(w, r, err)
		return
	}
	if !req.CreatedAt.IsZero() {
		h.fail(w, r, invalidField("created_at", "is set by the agent; leave it out"))
		return
	}
	s, err := h.a.AddSchedule(r.Context(), req)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/schedules/"+s.ID)
	writeJSON(w, http.StatusCreated, s)
}

func (h *handlers) getSchedule(w http.ResponseWriter, r *http.Request) {
	s, err := h.a.Schedule(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

func (h *handlers) deleteSchedule(w http.ResponseWriter, r *http.Request) {
	if err := h.a.DeleteSchedule(r.Context(), r.PathValue("id")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handlers) nextSchedules(w http.ResponseWriter, r *http.Request) {
	count := uint64(defaultNextCount)
	if r.URL.Query().Has("count") {
		n, err := queryUint(r, "count")
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if n < 1 || n > MaxNextCount {
			h.fail(w, r, invalidField("count", "%d; want 1 to %d", n, MaxNextCount))
			return
		}
		count = n
	}
	occ, err := h.a.NextOccurrences(r.Context(), int(count))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, occ)
}
