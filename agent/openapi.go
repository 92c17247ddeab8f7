package agent

import _ "embed"

// openAPIDocument is the API's contract; the tests check every request and
// response they make against it.
//
//go:embed openapi.json
var openAPIDocument []byte

// OpenAPIDocument is the agent API's OpenAPI 3 document (served at
// /openapi.json). The caller must not change the slice.
func OpenAPIDocument() []byte { return openAPIDocument }
