# apiprof: `make demo` (the main job on the example app) and `make test`.
# PYTHON picks the interpreter (python3.11 by default); VENV its virtualenv.
# PYTHON=python3.14 or python3.15: every goal runs inside a Debian unstable root that
# scripts/sid-root.sh makes once and caches (SID_ROOT, default /var/cache/apiprof-sid), with the
# venv in .venv-3.14 / .venv-3.15; SID=0 uses an interpreter of the host instead.

PYTHON ?= python3.11
SID_VERSIONS := 3.14 3.15
PYVER := $(patsubst python%,%,$(notdir $(PYTHON)))
SID ?= $(if $(filter $(PYVER),$(SID_VERSIONS)),1,0)
ifeq ($(SID),1)
VENV ?= .venv-$(PYVER)
endif
VENV ?= .venv
PY := $(VENV)/bin/python
PYBIN = $(shell scripts/find-python.sh $(PYTHON))
BUILD_ARGS := -Csetup-args=-Dwerror=true
VERSIONS := 3.11 3.12 3.13 3.14 3.15
ASAN_VENV := .venv-asan
# pytest workers (pytest-xdist): one per core by default; PYTEST_JOBS=0 runs the tests in one process.
PYTEST_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
SAN_BUILD_ARGS := -Csetup-args=-Db_sanitize=address,undefined -Csetup-args=-Db_lundef=false \
  -Csetup-args=-Dbuildtype=debugoptimized -Csetup-args=-Db_ndebug=false \
  "-Csetup-args=-Dc_args=-fno-sanitize-recover=all -fno-omit-frame-pointer"
SAN_ENV = LD_PRELOAD=$$(gcc -print-file-name=libasan.so) PYTHONMALLOC=malloc \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

.PHONY: all venv install demo test test-c test-py lint test-all sanitize bench bench-ir clean system-deps fuzz \
  sid-root

all: install

# The Debian unstable root (scripts/sid-root.sh): made or updated here, reused when cached.
sid-root:
	scripts/sid-root.sh ensure

ifeq ($(SID)$(APIPROF_IN_SID),1)
# On the host with PYTHON=python3.14/3.15: the same goals, run by make inside the root.
$(filter-out sid-root,$(or $(MAKECMDGOALS),all)):
	scripts/sid-root.sh run make --no-print-directory PYTHON=$(PYTHON) VENV=$(VENV) $@
else

# The venv is remade when it was made by another interpreter than $(PYTHON).
$(VENV)/.deps-$(PYTHON): requirements-dev.txt examples/shop/requirements.txt
	@want=$$($(PYBIN) -c 'import sys; print(sys.version)') && \
	  have=$$($(PY) -c 'import sys; print(sys.version)' 2>/dev/null); \
	  if [ "$$want" != "$$have" ]; then rm -rf $(VENV) && $(PYBIN) -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.deps-$(PYTHON)


# meson-python runs meson and ninja from PATH: the venv's, whatever the host has.
install: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pip install -q --no-build-isolation --no-deps $(BUILD_ARGS) .
	$(PY) -c "import apiprof, apiprof._core"

demo: install
	$(PY) examples/shop/demo.py
	$(VENV)/bin/apiprof report reports/shop.apiprof -o reports/shop.html --title "shop demo"
	rm -f reports/investigate-shop.db*
	SHOP_DB=$(CURDIR)/reports/investigate-shop.db $(VENV)/bin/apiprof investigate \
	  --app shop.app:app --app-dir examples/shop --urls examples/shop/traffic.txt \
	  -d 5 --warmup 1 --sweep auto --slo p99=1s -o reports/investigate

# Debian packages the tests use: Chromium (HTML report, dashboard), Go (go tool pprof),
# Graphviz (dot), valgrind (callgrind_annotate), zlib headers (pprof's gzip), wrk (bench), Prometheus (the scrape test),
# PostgreSQL (the query capture tests' server; a path may be a glob). apt-get runs only
# when one is missing, so this is quick when all are present.
SYSTEM_DEPS := chromium:chromium go:golang-go dot:graphviz callgrind_annotate:valgrind \
  /usr/include/zlib.h:zlib1g-dev wrk:wrk prometheus:prometheus \
  '/usr/lib/postgresql/*/bin/initdb':postgresql
system-deps:
	@missing=""; for d in $(SYSTEM_DEPS); do cmd=$${d%%:*}; pkg=$${d#*:}; \
	  if [ "$${cmd#/}" != "$$cmd" ]; then ls -d $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	  else command -v "$$cmd" >/dev/null || missing="$$missing $$pkg"; fi; done; \
	if [ -n "$$missing" ]; then \
	  echo "system-deps: installing$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

# C unit tests of the core, built by the same meson.build with -Dtests=true.
test-c: venv system-deps
	@test -f build/c-$(notdir $(VENV))-$(PYTHON)/build.ninja || \
	  $(VENV)/bin/meson setup build/c-$(notdir $(VENV))-$(PYTHON) -Dtests=true -Dwerror=true >/dev/null
	$(VENV)/bin/ninja -C build/c-$(notdir $(VENV))-$(PYTHON) test_core >/dev/null
	build/c-$(notdir $(VENV))-$(PYTHON)/test_core

lint: venv
	$(VENV)/bin/ruff check python tests bench examples

# `go tool pprof` is built on first use by newer Go releases (Debian unstable's): once
# here, not in two test workers at once under a test's timeout.
test-py: install
	@if command -v go >/dev/null; then go tool pprof -h >/dev/null 2>&1 || true; fi
	$(PY) -m pytest -q -n $(PYTEST_JOBS)

test: system-deps test-c lint test-py

test-all:
	@for v in $(VERSIONS); do \
	  $(MAKE) --no-print-directory test PYTHON=python$$v VENV=.venv-$$v || exit 1; \
	done

# ASan + UBSan: the C tests and the pytest suite, interpreter leaks not checked.
sanitize: system-deps
	$(MAKE) --no-print-directory venv VENV=$(ASAN_VENV)
	@test -f build/asan-c/build.ninja || \
	  $(ASAN_VENV)/bin/meson setup build/asan-c -Dtests=true -Dwerror=true \
	  -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized \
	  -Db_ndebug=false "-Dc_args=-fno-sanitize-recover=all -fno-omit-frame-pointer" >/dev/null
	$(ASAN_VENV)/bin/ninja -C build/asan-c test_core >/dev/null
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 build/asan-c/test_core
	PATH=$(CURDIR)/$(ASAN_VENV)/bin:$$PATH $(ASAN_VENV)/bin/python -m pip install -q --no-build-isolation --no-deps $(BUILD_ARGS) \
	  $(SAN_BUILD_ARGS) .
	$(SAN_ENV) $(ASAN_VENV)/bin/python -m pytest -q -p no:cacheprovider -n $(PYTEST_JOBS)

# Instruction counts under callgrind (bench/instructions.py): apiprof beside its peers, per
# Python (PYTHON=python3.12 ...); the tables go to bench/RESULTS.md by hand.
bench-ir: install system-deps
	$(PY) bench/instructions.py

bench: install
	$(PY) bench/timer_overhead.py
	$(PY) bench/clock_cost.py
	$(PY) bench/load_throughput.py
	$(PY) bench/middleware_overhead.py
	$(PY) bench/report_speed.py

# libFuzzer (tests/fuzz/README.md): FUZZ_SECONDS on the native reader and every report
# writer, FUZZ_SPY_SECONDS on apiprof-spy's location-table reader.
FUZZ_SECONDS ?= 60
FUZZ_SPY_SECONDS ?= 15
fuzz: install
	@command -v clang >/dev/null || { echo "make fuzz needs clang (apt-get install clang)"; exit 2; }
	mkdir -p build/fuzz/corpus
	$(PY) scripts/embed_assets.py build/fuzz/ap_assets.c src/core/report/report.css \
	  src/core/report/report.html src/core/report/report.js src/core/report/flame_svg.js
	clang -g -O1 -D_GNU_SOURCE -std=c11 -fsanitize=fuzzer,address,undefined -Isrc/core \
	  tests/fuzz/fuzz_report.c $$(ls src/core/*.c) build/fuzz/ap_assets.c -lz -lm -lpthread \
	  -o build/fuzz/fuzz_report
	$(PY) -c "import sys; sys.path.insert(0, 'tests/py'); import profiles, pathlib; \
	  d = pathlib.Path('build/fuzz/corpus'); profiles.write(profiles.shop_spec(), d / 'shop'); \
	  profiles.write(profiles.big_spec(300), d / 'big'); \
	  from apiprof import _core; (d / 'shop.json').write_bytes(bytes(_core.load(str(d / 'shop')).json()))"
	cd build/fuzz && ./fuzz_report -max_total_time=$(FUZZ_SECONDS) -max_len=65536 corpus
	clang -g -O1 -D_GNU_SOURCE -std=c11 -fsanitize=fuzzer,address,undefined -Isrc/core -Isrc/spy \
	  tests/fuzz/fuzz_spy.c src/spy/spy_py.c src/spy/spy_proc.c src/spy/spy_layout.c \
	  $$(ls src/core/*.c) build/fuzz/ap_assets.c -lz -lm -lpthread -o build/fuzz/fuzz_spy
	mkdir -p build/fuzz/corpus-spy
	cd build/fuzz && ./fuzz_spy -max_total_time=$(FUZZ_SPY_SECONDS) -max_len=4096 corpus-spy

clean:
	rm -rf build reports .venv .venv-* .pytest_cache

endif
