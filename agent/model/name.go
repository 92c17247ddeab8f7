package model

import "fmt"

// MaxNameLen is the longest VM name: a DNS label, so a name can also be a
// host name or a directory name without escaping.
const MaxNameLen = 63

// ValidName accepts [a-z0-9][a-z0-9-]{0,62}. Names become directory and
// socket names under the agent's state directory, so anything that could be
// a path ("/", ".", "..") or differ from another name only in case is
// refused.
func ValidName(name string) error {
	const want = "use lower-case letters, digits and '-', starting with a letter or digit, e.g. web1"
	switch {
	case name == "":
		return &FieldError{Field: "name", Msg: "empty; " + want}
	case len(name) > MaxNameLen:
		return &FieldError{Field: "name", Msg: fmt.Sprintf("%d characters; at most %d", len(name), MaxNameLen)}
	case name[0] == '-':
		return &FieldError{Field: "name", Msg: fmt.Sprintf("%q: %s", name, want)}
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return &FieldError{Field: "name", Msg: fmt.Sprintf("%q: %s", name, want)}
		}
	}
	return nil
}
