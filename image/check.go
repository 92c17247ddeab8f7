package image

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// hostnameLabel is one dot-separated part of a hostname (RFC 1123).
var hostnameLabel = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)

// CheckHostname accepts RFC 1123 host names: dot-separated labels of
// letters, digits and inner hyphens, at most 253 characters.
func CheckHostname(h string) error {
	if h == "" || len(h) > 253 {
		return fmt.Errorf("%q: want 1 to 253 characters", h)
	}
	for _, l := range strings.Split(h, ".") {
		if !hostnameLabel.MatchString(l) {
			return fmt.Errorf("%q: use letters, digits and hyphens (not at the ends), dot-separated", h)
		}
	}
	return nil
}

// sshKeyTypes are the key types OpenSSH accepts in authorized_keys.
var sshKeyTypes = []string{
	"ssh-ed25519", "ssh-rsa", "ssh-dss",
	"ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
	"sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
}

// CheckAuthorizedKey accepts one authorized_keys line without options:
// "TYPE BASE64 [COMMENT]", where BASE64's first field repeats TYPE.
func CheckAuthorizedKey(line string) error {
	if strings.ContainsAny(line, "\n\r\x00") {
		return errors.New("a key must be a single line")
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return fmt.Errorf("%q is not a public key: want \"TYPE BASE64 [COMMENT]\" as in id_ed25519.pub", abbreviate(line))
	}
	typ := f[0]
	known := false
	for _, t := range sshKeyTypes {
		known = known || t == typ
	}
	if !known {
		if strings.HasPrefix(line, "-----BEGIN") {
			return errors.New("this is a private key: give the .pub file")
		}
		return fmt.Errorf("key type %q: want one of %s", abbreviate(typ), strings.Join(sshKeyTypes[:4], ", "))
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil || len(blob) < 4 {
		return fmt.Errorf("%s key: the key data is not base64", typ)
	}
	// The blob starts with the key type as an SSH string: a big-endian
	// length and the name.
	n := int(blob[0])<<24 | int(blob[1])<<16 | int(blob[2])<<8 | int(blob[3])
	if n != len(typ) || len(blob) < 4+n || string(blob[4:4+n]) != typ {
		return fmt.Errorf("%s key: the key data does not hold a %s key", typ, typ)
	}
	return nil
}

// ReadAuthorizedKeys reads the public keys in path: one per line, blank
// lines and # comments skipped, each checked with CheckAuthorizedKey.
func ReadAuthorizedKeys(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := CheckAuthorizedKey(line); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		keys = append(keys, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s holds no public key", path)
	}
	return keys, nil
}

func abbreviate(s string) string {
	if len(s) > 24 {
		return s[:24] + "..."
	}
	return s
}
