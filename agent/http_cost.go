package agent

import "net/http"

// costRoutes adds the cost routes (/v1/cost...).
func (h *handlers) costRoutes(mux *http.ServeMux) {}
