# wisp's build, test and bench entry points. Everything a fresh Debian 12
# machine needs is installed by `make deps`; kernels and images are fetched
# or built into $(WISP_CACHE) (default ~/.cache/wisp), never into the repo.

SHELL      := /bin/bash
GO         ?= go
BIN        := bin/wisp
WISP_CACHE ?= $(HOME)/.cache/wisp
export WISP_CACHE

# Debian packages wisp's build, tests and default guest use:
#   qemu-system-x86 qemu-utils  the TCG backend and image tools
#   acpica-tools                iasl -d checks the ACPI tables wisp writes
#   busybox-static              shell and tools in the default guest
#   build-essential bc bison flex libelf-dev libssl-dev cpio  the minimal kernel build
#   linux-source-6.1            the minimal kernel's source
#   linux-libc-dev              kvm.h, checked against wisp's ioctl numbers
#   xz-utils zstd               kernel payloads and modules
#   tmux                        drives the console under a pty in tests
#   iproute2                    network namespaces, bridges and taps in tests
#   e2fsprogs                   mkfs.ext4 -d and debugfs: disk images without mounting
#   mmdebstrap                  builds Debian images (wisp image build)
#   fio iperf3                  disk and network numbers in make bench (copied into the guest)
#   genisoimage                 isoinfo reads back the NoCloud seeds wisp writes
DEB_PACKAGES := qemu-system-x86 qemu-utils acpica-tools busybox-static \
	build-essential bc bison flex libelf-dev libssl-dev cpio linux-source-6.1 \
	linux-libc-dev xz-utils zstd tmux iproute2 ca-certificates e2fsprogs mmdebstrap fio iperf3 genisoimage

.PHONY: all build deps test test-short bench run lint clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/wisp

# deps installs only what is missing, so a warm machine pays nothing.
deps:
	@missing=$$(dpkg-query -W -f='$${Package} $${Status}\n' $(DEB_PACKAGES) 2>/dev/null | awk '$$NF!="installed"{print $$1}'; \
		for p in $(DEB_PACKAGES); do dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done); \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$${missing// /}" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(GO) mod download

# run boots the default guest (Debian's cloud kernel, wisp's initramfs) to a shell.
run: deps build
	./$(BIN) run

# test prints each package's result, every failure in full, every skip with
# its reason, and a closing count; the raw `go test -json` stream is kept in
# bin/test.json.
test: deps build
	$(GO) vet ./...
	$(GO) build -o bin/report ./test/report
	set -o pipefail; $(GO) test -json -count=1 -timeout 80m ./... 2>&1 | tee bin/test.json | ./bin/report
	FUZZTIME=$(FUZZTIME_SHORT) GO=$(GO) ./test/fuzz/run.sh

# fuzz runs every fuzz target in the repo for FUZZTIME each and stops at
# the first crash (its input lands in the package's testdata/fuzz/); test
# runs each for FUZZTIME_SHORT, so a broken harness fails there too.
.PHONY: fuzz
FUZZTIME       ?= 30s
FUZZTIME_SHORT ?= 3s
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./test/fuzz/run.sh

test-short: build
	$(GO) test -short -count=1 ./...

bench: deps build
	$(GO) run ./test/bench

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

clean:
	rm -rf bin
