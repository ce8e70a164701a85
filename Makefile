# runproc: `make build` makes dist/runproc and the example's rootfs; `make demo` runs the
# example; `make test` installs what the tests need, builds, and runs every test.
# All work as root on fresh Debian 12/13.

PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BIN := dist/runproc
SOURCES := $(shell find runproc -name '*.py') runproc.spec
STATIC_TOOLING := build/static/make-static.sh build/static/sxbundle.py build/static/requirements.txt \
	build/static/staticx-0.14.2-runproc.patch
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' runproc/__init__.py)
ARCH := $(shell dpkg --print-architecture 2>/dev/null || uname -m)
# Build: venv + PyInstaller (needs libpython and objdump); busybox-static for the example's
# rootfs. Test: the real runc and containerd to compare with and to drive us; strace for
# fault injection; CNI plugins, gcc (a static pause program) and iproute2 for the CRI suite;
# qemu for the cgroup v2 VM; debootstrap and systemd-nspawn for the Kind-like node.
BUILD_PACKAGES := python3 python3-venv python3-dev binutils busybox-static
TEST_PACKAGES := runc:runc containerd:containerd busybox-static util-linux procps strace \
	containernetworking-plugins gcc libc6-dev iproute2 qemu-system-x86:qemu-system-x86_64 \
	debootstrap systemd-container uidmap
PYTEST_ARGS ?=

.PHONY: build demo test unit bench release integration-test clean deps

# The binary, and the example rootfs the README's try-out uses.
build: $(BIN) examples/echo/rootfs/bin/busybox

$(STAMP): build/requirements.txt build/requirements-test.txt
	build/ensure-packages.sh $(BUILD_PACKAGES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r build/requirements.txt -r build/requirements-test.txt
	# Checkouts before the package moved out of src/ pointed the venv at src/: drop that.
	rm -f $(VENV)/lib/python3*/site-packages/runproc-src.pth
	touch $@

# One build: PyInstaller makes a one-folder build, make-static.sh packs it with the
# loader and every library into dist/runproc, the release binary (build/static/README.md).
$(BIN): $(STAMP) $(SOURCES) $(STATIC_TOOLING)
	$(VENV)/bin/pyinstaller --noconfirm --log-level WARN --distpath build/work/dist --workpath build/work runproc.spec
	mkdir -p dist
	# Replace by rename: a running container init may still execute the old file.
	build/static/make-static.sh build/work/dist/runproc $@.new && mv -f $@.new $@

examples/echo/rootfs/bin/busybox: $(STAMP)
	build/make-rootfs.sh examples/echo/rootfs

demo: build
	build/demo.sh

deps: $(STAMP)
	build/ensure-packages.sh $(TEST_PACKAGES)

test: deps build
	RUNPROC_BIN=$(CURDIR)/$(BIN) $(PY) -m pytest $(PYTEST_ARGS) tests

unit: $(STAMP)
	$(PY) -m pytest tests/unit

bench: deps build
	RUNPROC_BIN=$(CURDIR)/$(BIN) $(PY) build/bench.py

integration-test: deps build
	RUNPROC_BIN=$(CURDIR)/$(BIN) $(PY) -m pytest -v tests/kind

# dist/runproc-<version>-linux-<arch> and dist/SHA256SUMS beside dist/runproc; the version
# comes from the package.
release: $(BIN)
	cp $(BIN) dist/runproc-$(VERSION)-linux-$(ARCH)
	cd dist && sha256sum runproc-$(VERSION)-linux-$(ARCH) > SHA256SUMS
	@echo "release: dist/runproc-$(VERSION)-linux-$(ARCH)"

clean:
	rm -rf build/work dist $(VENV) examples/echo/rootfs build/static/.venv build/static/.work
