# hypersdk: `make run` serves the API on 127.0.0.1:8080; `make test` runs every test.
# Both install what is missing first (Debian packages as root, then a .venv).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= etc/hypersdk.yaml
export PYTHONPATH := $(CURDIR)/src:$(CURDIR)

# What the daemon itself runs: disk tools, libvirt client, and what builds libvirt-python.
RUN_PACKAGES := python3-venv python3-dev gcc pkg-config libvirt-dev libvirt-clients qemu-utils nbdkit curl python3-libnbd
# What the tests add: the vCenter simulator's sources, a real libvirtd with QEMU, bridges, and
# debootstrap for the Debian guest the boot tests build (cached under /var/cache/hypersdk-tests),
# PostgreSQL, the shared store the tests start as the postgres user, and systemd for systemd-analyze
# (the shipped unit is verified; nothing runs systemd). A suite that finds one missing fails.
TEST_PACKAGES := golang-go golang-github-vmware-govmomi-dev libvirt-daemon-system qemu-system-x86 \
	libxml2-utils dnsmasq-base iproute2 chromium dbus debootstrap postgresql systemd
# libguestfs (guest inspection: device models, interface names) and virt-v2v, with what they
# recommend (a kernel for the libguestfs appliance).
GUEST_PACKAGES := virt-v2v libguestfs-tools python3-guestfs libnbd-bin

.PHONY: test-postgresql run test unit integration packages test-packages clean

run: packages $(BIN)/.installed
	$(BIN)/twistd --pidfile= -n hypersdk --config $(CONFIG)

JS_MODULES := tests/js/node_modules/.installed

# Two test processes, each taking whole modules (the boot tests' guests boot while the rest runs).
test: packages test-packages $(BIN)/.installed $(JS_MODULES)
	$(BIN)/python -m pytest -q -rs -n 2 --dist loadfile --durations=15 tests

# The daemon's API suites again, each daemon on a fresh PostgreSQL database (not part of `make test`:
# the unit API suites already run on both stores there).
API_SUITES = tests/integration/test_daemon.py tests/integration/test_schedules_api.py \
	tests/integration/test_webhooks.py tests/integration/test_live.py tests/integration/test_hyperctl.py
test-postgresql: packages test-packages $(BIN)/.installed $(JS_MODULES)
	HYPERSDK_TEST_STORE=postgresql $(BIN)/python -m pytest -q -rs $(API_SUITES)

unit: $(BIN)/.installed
	$(BIN)/python -m pytest -q -rs tests/unit

integration: packages test-packages $(BIN)/.installed $(JS_MODULES)
	$(BIN)/python -m pytest -q -rs tests/integration

packages:
	@scripts/ensure-debian-packages $(RUN_PACKAGES)
	@scripts/ensure-debian-packages --with-recommends $(GUEST_PACKAGES)

test-packages:
	@scripts/ensure-debian-packages $(TEST_PACKAGES)

# The API document's JavaScript example runs with axios and ws from npm (Node from Debian if absent).
$(JS_MODULES): tests/js/package.json tests/js/package-lock.json
	@command -v npm >/dev/null || scripts/ensure-debian-packages nodejs npm
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(BIN)/.installed: requirements.txt | packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	touch $@

clean:
	rm -rf $(VENV) build var tests/js/node_modules
