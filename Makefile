# Thin wrapper over Meson: the two commands of the README, and their parts.
BUILD ?= build
ASAN ?= build-asan

.PHONY: run test build deps unit guest blackbox lint clean

# Install dependencies, build, and run kvmhostd with its defaults.
run:
	scripts/run-daemon.sh $(ARGS)

# Everything CI runs: unit tests (normal and ASan+UBSan builds), lint, the
# test guest, and the black-box tests against the real daemon and QEMU.
test:
	scripts/test.sh

deps:
	scripts/install-deps.sh --test

build: deps
	@[ -f $(BUILD)/build.ninja ] || meson setup $(BUILD)
	ninja -C $(BUILD)

unit: build
	meson test -C $(BUILD) --suite unit --print-errorlogs

guest:
	tests/guest/build.sh

clean:
	rm -rf $(BUILD) $(ASAN) build-fuzz
