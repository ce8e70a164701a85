# runproc: `make demo` builds and runs the example; `make test` installs what the
# tests need, builds, and runs every test. Both work as root on fresh Debian 12/13.

PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SOURCES := $(shell find src -name '*.py') runproc.spec
STATIC_TOOLING := build/static/make-static.sh build/static/sxbundle.py build/static/requirements.txt \
	build/static/staticx-0.14.2-runproc.patch
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/runproc/__init__.py)
ARCH := $(shell dpkg --print-architecture 2>/dev/null || uname -m)
# Build: venv + PyInstaller (needs libpython and objdump). Test: the real runc and
# containerd to compare with and to drive us, busybox-static for root filesystems.
BUILD_PACKAGES := python3 python3-venv python3-dev binutils
TEST_PACKAGES := runc:runc containerd:containerd busybox-static util-linux procps
PYTEST_ARGS ?=

.PHONY: build demo test unit bench release integration-test clean deps

build: runproc

$(STAMP): build/requirements.txt build/requirements-test.txt
	build/ensure-packages.sh $(BUILD_PACKAGES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r build/requirements.txt -r build/requirements-test.txt
	# The package lives in src/ (./runproc is the binary): make it importable in the venv.
	$(PY) -c 'import site, os; open(os.path.join(site.getsitepackages()[0], "runproc-src.pth"), "w").write(os.path.abspath("src") + "\n")'
	touch $@

# One build: PyInstaller makes a one-folder build, make-static.sh packs it with the
# loader and every library into ./runproc, the release binary (build/static/README.md).
runproc: $(STAMP) $(SOURCES) $(STATIC_TOOLING)
	$(VENV)/bin/pyinstaller --noconfirm --log-level WARN --distpath build/work/dist --workpath build/work runproc.spec
	# Replace by rename: a running container init may still execute the old file.
	build/static/make-static.sh build/work/dist/runproc $@.new && mv -f $@.new $@

examples/echo/rootfs/bin/busybox:
	build/make-rootfs.sh examples/echo/rootfs

demo: runproc examples/echo/rootfs/bin/busybox
	build/demo.sh

deps: $(STAMP)
	build/ensure-packages.sh $(TEST_PACKAGES)

test: deps runproc
	RUNPROC_BIN=$(CURDIR)/runproc $(PY) -m pytest $(PYTEST_ARGS) tests

unit: $(STAMP)
	$(PY) -m pytest tests/unit

bench: deps runproc
	RUNPROC_BIN=$(CURDIR)/runproc $(PY) build/bench.py

integration-test: deps runproc
	RUNPROC_BIN=$(CURDIR)/runproc $(PY) -m pytest -v tests/kind

# dist/runproc-<version>-linux-<arch> and dist/SHA256SUMS; the version comes from the package.
release: runproc
	mkdir -p dist
	cp runproc dist/runproc-$(VERSION)-linux-$(ARCH)
	cd dist && sha256sum runproc-$(VERSION)-linux-$(ARCH) > SHA256SUMS
	@echo "release: dist/runproc-$(VERSION)-linux-$(ARCH)"

clean:
	rm -rf build/work dist runproc $(VENV) examples/echo/rootfs build/static/.venv build/static/.work
