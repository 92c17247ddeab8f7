// Package image works with VM disk images without mounting them: it reads
// the kernel and initrd out of a disk's root filesystem (ExtractBoot),
// converts between raw and qcow2 (Convert), copies images sparsely
// (CopyFile) and writes cloud-init NoCloud seeds (NoCloudSeed). Building
// Debian images is image/debian's job; the machine directory a build
// leaves behind (vm.json) is image/vmdir's.
package image
