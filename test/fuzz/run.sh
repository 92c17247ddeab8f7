#!/usr/bin/env bash
# run.sh fuzzes every fuzz target in the repository, one after the other,
# for FUZZTIME each (default 30s; `make fuzz`), and stops at the first one
# that fails: a crash, a hang the fuzzer reports, or a harness that does
# not build. Go writes the failing input to the package's testdata/fuzz/,
# where it becomes a regression seed once committed.
#
# Targets are found by asking `go test -list` in each package whose tests
# define a Fuzz function, so a new target is picked up without editing
# this file. Go fuzzes one target of one package per run, hence the loop.
#
# Usage: test/fuzz/run.sh [PACKAGE...]   (default: every package)
set -euo pipefail

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
cd "$(dirname "$0")/../.."

if [ $# -gt 0 ]; then
	pkgs=("$@")
else
	mapfile -t pkgs < <(git ls-files --cached --others --exclude-standard '*_test.go' |
		xargs grep -l '^func Fuzz[A-Z0-9_]' | xargs -n1 dirname | sort -u | sed 's|^|./|')
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$SECONDS
count=0
for pkg in "${pkgs[@]}"; do
	mapfile -t targets < <($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
	if [ ${#targets[@]} -eq 0 ]; then
		echo "fuzz: $pkg: no fuzz targets listed (does it build?)" >&2
		exit 1
	fi
	for t in "${targets[@]}"; do
		echo "fuzz: $pkg $t for $FUZZTIME"
		if ! $GO test -run "^$t\$" -fuzz "^$t\$" -fuzztime "$FUZZTIME" "$pkg" >"$log" 2>&1; then
			# Go 1.26's coordinator can fail a run with a bare "context
			# deadline exceeded" when -fuzztime ends while a worker is busy
			# (go.dev/issue/75804, fixed in Go 1.27); it writes no input.
			# Everything else, and anything that wrote an input, fails.
			if grep -qxE '[[:space:]]*context deadline exceeded' "$log" &&
				! grep -q 'Failing input written to' "$log"; then
				echo "fuzz: $pkg $t: the fuzzing deadline raced a worker (go.dev/issue/75804), no failing input; counted as passed"
				count=$((count + 1))
				continue
			fi
			cat "$log"
			echo "fuzz: FAIL $pkg $t (the failing input is under $pkg/testdata/fuzz/$t/)" >&2
			exit 1
		fi
		tail -n 1 "$log"
		count=$((count + 1))
	done
done
echo "fuzz: $count targets passed in $((SECONDS - start))s"
