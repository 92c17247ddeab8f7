package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	"golang.org/x/sys/unix"

	"github.com/wisp-vmm/wisp/internal/stale"
)

// SeedVolumeID is the volume label cloud-init's NoCloud datasource looks
// for.
const SeedVolumeID = "cidata"

// SeedFileName is the seed image NoCloudSeed writes into its directory.
const SeedFileName = "nocloud-seed.iso"

// maxUserData bounds user-data: cloud-init reads it whole into memory, and
// a seed is a few kilobytes of configuration, not a payload.
const maxUserData = 16 << 20

// SeedOptions is what a NoCloud seed tells cloud-init.
type SeedOptions struct {
	// Hostname becomes meta-data local-hostname ("" to leave it to the
	// image).
	Hostname string
	// InstanceID is meta-data instance-id. cloud-init runs its
	// once-per-instance modules again when it changes. "" derives one from
	// the seed's contents, so a changed seed is a new instance.
	InstanceID string
	// SSHKeys are authorized_keys lines for the image's default user
	// (meta-data public-keys).
	SSHKeys []string
	// UserData is the user-data file as is (#cloud-config, a script, ...);
	// nil writes an empty #cloud-config.
	UserData []byte
}

// ErrBadSeed marks invalid SeedOptions.
var ErrBadSeed = errors.New("invalid NoCloud seed")

// NoCloudSeed writes dir/nocloud-seed.iso: an ISO9660 image (Rock Ridge and
// Joliet names, volume id "cidata") holding user-data and meta-data, which
// cloud-init's NoCloud datasource reads from a disk attached to the VM. It
// returns the image's path. The image is written to a temporary file and
// renamed, so a reader never sees half of one.
func NoCloudSeed(dir string, o SeedOptions) (string, error) {
	meta, user, err := seedFiles(o)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("nocloud seed: %w", err)
	}
	final := filepath.Join(dir, SeedFileName)
	work, err := os.MkdirTemp(dir, ".seed-")
	if err != nil {
		return "", fmt.Errorf("nocloud seed: %w", err)
	}
	defer os.RemoveAll(work)
	tmp := filepath.Join(work, SeedFileName)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", fmt.Errorf("nocloud seed: %w", err)
	}
	err = writeISO(f, filepath.Join(work, "tree"), map[string][]byte{
		"meta-data": meta,
		"user-data": user,
	})
	if err = errors.Join(err, f.Close()); err != nil {
		return "", fmt.Errorf("nocloud seed %s: %w", final, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("nocloud seed: %w", err)
	}
	return final, nil
}

// NoCloudSeedMemory is NoCloudSeed into memory: the image is built in an
// anonymous memory file (memfd, close-on-exec), sealed against any change,
// and returned open. User-data and keys are never written to a disk, so
// nothing of them outlives the process, however it ends. The image is
// readable as /proc/self/fd/N while the file is open. The only thing on
// disk is a scratch directory (under os.TempDir(), with an owner record
// for internal/stale) holding empty placeholders, removed before this
// returns.
func NoCloudSeedMemory(o SeedOptions) (_ *os.File, err error) {
	meta, user, err := seedFiles(o)
	if err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate("wisp-nocloud-seed", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("nocloud seed: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:wisp-nocloud-seed")
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	work, err := stale.MkdirTemp("", stale.PrefixSeed)
	if err != nil {
		return nil, fmt.Errorf("nocloud seed: %w", err)
	}
	defer os.RemoveAll(work)
	if err := writeISO(f, filepath.Join(work, "tree"), map[string][]byte{
		"meta-data": meta,
		"user-data": user,
	}); err != nil {
		return nil, fmt.Errorf("nocloud seed: %w", err)
	}
	// The VM reads the seed; nobody may change it any more, not even
	// through a writable open of /proc/self/fd/N.
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		return nil, fmt.Errorf("nocloud seed: seal memfd: %w", err)
	}
	return f, nil
}

// seedFiles renders meta-data and user-data. meta-data is YAML; we write
// it as JSON, which YAML parsers read, so no value can break its quoting.
func seedFiles(o SeedOptions) (meta, user []byte, err error) {
	if o.Hostname != "" {
		if err := CheckHostname(o.Hostname); err != nil {
			return nil, nil, fmt.Errorf("%w: hostname: %w", ErrBadSeed, err)
		}
	}
	for i, k := range o.SSHKeys {
		if err := CheckAuthorizedKey(k); err != nil {
			return nil, nil, fmt.Errorf("%w: ssh key %d: %w", ErrBadSeed, i+1, err)
		}
	}
	if strings.ContainsAny(o.InstanceID, "\n\r\x00") {
		return nil, nil, fmt.Errorf("%w: instance id %q: want a single line", ErrBadSeed, o.InstanceID)
	}
	user = o.UserData
	if len(user) == 0 {
		user = []byte("#cloud-config\n{}\n")
	}
	if err := CheckUserData(user); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrBadSeed, err)
	}
	type metaData struct {
		InstanceID    string   `json:"instance-id"`
		LocalHostname string   `json:"local-hostname,omitempty"`
		PublicKeys    []string `json:"public-keys,omitempty"`
	}
	m := metaData{InstanceID: o.InstanceID, LocalHostname: o.Hostname, PublicKeys: o.SSHKeys}
	if m.InstanceID == "" {
		h := sha256.New()
		b, _ := json.Marshal(m)
		h.Write(b)
		h.Write(user)
		m.InstanceID = "wisp-" + hex.EncodeToString(h.Sum(nil))[:16]
	}
	meta, err = json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, nil, fmt.Errorf("encode meta-data: %w", err)
	}
	return append(meta, '\n'), user, nil
}

// CheckUserData rejects user-data cloud-init would silently ignore: it
// acts only on content whose first bytes say what it is.
func CheckUserData(b []byte) error {
	if len(b) > maxUserData {
		return fmt.Errorf("user-data is %d bytes, more than %d: cloud-init reads configuration, not payloads", len(b), maxUserData)
	}
	known := []string{"#cloud-config", "#!", "#include", "#cloud-boothook", "#part-handler", "## template: jinja", "#cloud-config-archive", "Content-Type:", "MIME-Version:", "\x1f\x8b"}
	for _, k := range known {
		if bytes.HasPrefix(b, []byte(k)) {
			return nil
		}
	}
	return errors.New("user-data starts with none of #cloud-config, #!, #include or a MIME header, so cloud-init would ignore it: add a first line #cloud-config")
}

// writeISO writes files into an ISO9660 image in f, using work as the
// library's scratch directory. The library copies file contents from that
// directory when it finalizes the image, so work gets only holes of the
// right sizes; the contents are written straight into the finished image
// at the extents the library chose. User-data and keys thus never touch
// the scratch directory, which may be on a disk that keeps their blocks.
func writeISO(f *os.File, work string, files map[string][]byte) error {
	if err := os.Mkdir(work, 0o755); err != nil {
		return err
	}
	// The backend needs a size up front; Finalize writes within it. Files
	// are padded to 2K sectors, and the system area, descriptors and
	// directories take a few dozen sectors.
	size := int64(1 << 20)
	for _, b := range files {
		size += int64(len(b)) + 4096
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	store := file.New(f, false)
	fs, err := iso9660.Create(store, size, 0, isoBlock, work)
	if err != nil {
		return fmt.Errorf("create iso9660: %w", err)
	}
	for name, data := range files {
		if err := placeholder(filepath.Join(work, name), int64(len(data))); err != nil {
			return fmt.Errorf("add %s: %w", name, err)
		}
	}
	if err := fs.Finalize(iso9660.FinalizeOptions{RockRidge: true, Joliet: true, VolumeIdentifier: SeedVolumeID}); err != nil {
		return fmt.Errorf("finalize iso9660: %w", err)
	}
	done, err := iso9660.Read(store, size, 0, isoBlock)
	if err != nil {
		return fmt.Errorf("read back iso9660: %w", err)
	}
	for name, data := range files {
		if err := fillExtent(done, f, name, data); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// isoBlock is the ISO9660 logical block size; extents are counted in it.
const isoBlock = 2048

// placeholder creates path as a hole of size bytes: no data is written.
// Its mode becomes the file's Rock Ridge mode.
func placeholder(path string, size int64) error {
	p, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	return errors.Join(p.Truncate(size), p.Close())
}

// fillExtent writes data into the extent of file name in the finished
// image. ISO9660 files are contiguous, and the Rock Ridge and Joliet
// directories name the same extent.
func fillExtent(fs *iso9660.FileSystem, f *os.File, name string, data []byte) error {
	ff, err := fs.OpenFile(name, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer ff.Close()
	isoFile, ok := ff.(*iso9660.File)
	if !ok {
		return fmt.Errorf("unexpected iso9660 file type %T", ff)
	}
	st, err := isoFile.Stat()
	if err != nil {
		return err
	}
	if st.Size() != int64(len(data)) {
		return fmt.Errorf("extent holds %d bytes, want %d", st.Size(), len(data))
	}
	_, err = f.WriteAt(data, int64(isoFile.Location())*isoBlock)
	return err
}
