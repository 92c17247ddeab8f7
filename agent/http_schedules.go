package agent

import "net/http"

// scheduleRoutes adds the schedule routes (/v1/schedules...).
func (h *handlers) scheduleRoutes(mux *http.ServeMux) {}
