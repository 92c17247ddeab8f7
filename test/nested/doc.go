// Package nested runs wisp's KVM-tier tests inside a QEMU-TCG virtual
// machine whose CPU has SVM, for hosts without a usable /dev/kvm.
//
// `go test ./test/nested/` builds the test binaries of Packages() (static,
// CGO_ENABLED=0), the test guests (package test/guests) and a static init
// (test/nested/nestinit), packs them with the KVM modules of Debian's
// cloud kernel (from the guest kit), the host's GNU as/ld/objcopy with
// their libraries (HostTools: some tests assemble guests of their own) and
// each package's testdata into an initramfs, boots it with
//
//	qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2G
//
// and streams the VM's console into the test log. Inside, init loads
// irqbypass, kvm and kvm-amd, checks /dev/kvm and runs each test binary
// with -test.v. Every inner test is mirrored as a subtest
// (TestKVMTestsInNestedVM/<package, "/" written ".">/<TestName>) that passes, fails or skips
// as it did inside, and the outer test fails if a binary failed or the VM
// did not reach its end in time.
//
// Environment:
//
//	WISP_NESTED=always|off      run even where /dev/kvm exists / never run
//	WISP_NESTED_TIMEOUT=20m     bound on the whole nested run (go test's own
//	                            -timeout must be larger; default 10m is not)
//	WISP_NESTED_TEST_TIMEOUT=10m  each inner binary's -test.timeout; init
//	                            sends SIGQUIT (goroutine dump), then SIGKILL,
//	                            a minute after it
//	WISP_NESTED_RUN=regexp      -test.run for the inner binaries
//	WISP_NESTED_SKIP=regexp     -test.skip for the inner binaries
//	WISP_NESTED_KERNEL_ROOT=dir an unpacked linux-image-*-cloud-amd64 .deb
//	                            (boot/vmlinuz-*, lib/modules/*/kernel/...)
//	WISP_TEST_FILES=dir         copied into the VM; inside, WISP_TEST_FILES
//	                            names the copy
//
// Inside, the binaries also see WISP_TEST_GUESTS=/guests (the prebuilt
// test guests, which guests.Build returns), WISP_NESTED_INSIDE=1, HOME=/root
// and TMPDIR=/tmp, and run in /src/<package> (with its testdata). Kernel
// warnings and worse appear in the console as "kernel: " lines.
//
// The outer -run also selects: -run 'TestKVMTestsInNestedVM/kvm/TestFoo'
// builds only packages matching "kvm" and passes -test.run=TestFoo inside.
// -short is passed on.
//
// Other programs that need KVM use the same VM through RunProgram: it runs
// one static binary (BuildMain builds one) with the files and host tools
// it asks for, and streams its output lines back. test/bench runs its
// wisp-vs-QEMU KVM comparison (test/bench/kvmbench) that way.
package nested
