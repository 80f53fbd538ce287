# backend-labs front door. CMake builds; this file only strings the steps together in the
# order a person would type them: install what is missing, configure, build, start the
# servers, run.
#
#   make lab-<name> [ARGS="--step"]   build and run one lab against the servers
#   make labs                         every lab with --quick --json: one screen of verdicts
#   make report                       one HTML page of every lab's proofs: build/report/index.html
#   make drill [LAB=name]             one interview question, your answer out loud, the lab's proof
#   make test                         unit + integration tests, normal and ASan/UBSan builds
#   make up | down | status           the local PostgreSQL and Redis (scripts/labenv)
#   make bench                        every benchmark (built, servers up)
#   make fuzz [FUZZ_SECONDS=60]       every libFuzzer harness (fuzz/), FUZZ_SECONDS each (clang)
#   make fuzz-smoke                   the same, all of them within about 60 s (what CI runs)
#   make format                       clang-format -i every .c/.h
#   make clean                        stop the servers, remove the build trees
#
# Steps are prerequisites in the order they must run; .NOTPARALLEL keeps that order under
# `make -j` (the parallelism is inside cmake --build and ctest, -j$(JOBS)).

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
JOBS       ?= 2
ARGS       ?=
CMAKE      ?= cmake
CTEST      ?= ctest

# Labs that need the replica set of `scripts/labenv up --replicas` (a second PostgreSQL cluster
# and its standby, a Redis pair): started for them only; `make down` stops it with the rest.
REPLICA_LABS := consistency

LABS := $(sort $(patsubst labs/%/main.c,%,$(wildcard labs/*/main.c)))

# The sanitizer run: leaks count as failures, and any UB stops the test with a stack.
ASAN_ENV := ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.NOTPARALLEL:
# cmake --build runs make too: without this, every line of it says which directory it entered.
MAKEFLAGS += --no-print-directory
.DEFAULT_GOAL := help
.PHONY: help bootstrap configure build configure-asan build-asan up down status labs report test \
	bench clean format configure-fuzz build-fuzz fuzz fuzz-smoke

help:
	@sed -n '5,15p' Makefile | sed 's/^# //'
	@echo "labs: $(or $(LABS),(none yet))"

bootstrap:
	@scripts/bootstrap

# Configure only once per tree: later builds re-run CMake by themselves when a CMakeLists.txt
# or a globbed folder changes (CONFIGURE_DEPENDS).
configure: bootstrap
	@test -f $(BUILD)/CMakeCache.txt || \
		$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLAB_SANITIZE=OFF

build: configure
	$(CMAKE) --build $(BUILD) -j$(JOBS)

configure-asan: bootstrap
	@test -f $(ASAN_BUILD)/CMakeCache.txt || \
		$(CMAKE) -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DLAB_SANITIZE=ON

build-asan: configure-asan
	$(CMAKE) --build $(ASAN_BUILD) -j$(JOBS)

up: bootstrap
	@scripts/labenv up

down:
	@scripts/labenv down

status:
	@scripts/labenv status

# One pattern rule for every lab: a new labs/<name>/ folder is a new target. The name is
# checked before anything is built, so a typo costs nothing.
lab-%:
	@test -f labs/$*/main.c || { echo "no lab '$*' (labs: $(or $(LABS),none yet))" >&2; exit 2; }
	@$(MAKE) --no-print-directory build up
	@if [ -n "$(filter $*,$(REPLICA_LABS))" ]; then scripts/labenv up --replicas; fi
	$(BUILD)/lab-$* $(ARGS)

# labsuite (suite/) runs the labs, in parallel where they share no fixed resource (labsuite
# labs --help lists the ones that run alone, and why); exit 1 when a verdict failed.
labs: build up
	@if [ -n "$(filter $(LABS),$(REPLICA_LABS))" ]; then scripts/labenv up --replicas; fi
	$(BUILD)/labsuite labs --bin $(BUILD) $(LABS)

# The page is written even when a verdict failed (it shows which); it is then checked in headless
# Chromium (scripts/bootstrap installs it), which also saves $(BUILD)/report/screenshot.png.
report: build up
	@if [ -n "$(filter $(LABS),$(REPLICA_LABS))" ]; then scripts/labenv up --replicas; fi
	$(BUILD)/labsuite report --bin $(BUILD) --out $(BUILD)/report $(LABS)

# A drill (suite/drill.c): LAB's docs page, or a random lab's, then its --quick run. A random
# pick can land on a lab of REPLICA_LABS, so without LAB their replica set is started too.
LAB ?=
.PHONY: drill
drill: build up
	@if [ -n "$(filter $(or $(LAB),$(LABS)),$(REPLICA_LABS))" ]; then scripts/labenv up --replicas; fi
	@$(BUILD)/labsuite drill --bin $(BUILD) --docs docs $(LAB)

# Both suites always run, so one report shows every failure; the target fails if either did.
test: build build-asan up
	@rc=0; \
	echo "== tests ($(BUILD), RelWithDebInfo)"; \
	$(CTEST) --test-dir $(BUILD) --output-on-failure -j$(JOBS) || rc=1; \
	echo "== tests ($(ASAN_BUILD), Debug + ASan/UBSan)"; \
	$(ASAN_ENV) $(CTEST) --test-dir $(ASAN_BUILD) --output-on-failure -j$(JOBS) || rc=1; \
	if [ $$rc -ne 0 ]; then echo "make test: FAILED (see above)" >&2; fi; \
	exit $$rc

# The benchmarks' own tools (PgBouncer, wrk) are installed here only: make test never needs them.
bench: build up
	@scripts/bootstrap --with-bench
	@set -e; ran=0; \
	for b in $(BUILD)/bench_* scripts/bench-*; do \
		if [ -f "$$b" ] && [ -x "$$b" ]; then echo "== $$b"; "$$b" $(ARGS); ran=1; fi; \
	done; \
	[ $$ran -eq 1 ] || echo "no benchmarks yet (bench/bench_*.c, scripts/bench-*)"; \
	echo "== $(BUILD)/labsuite faults (the fault matrix, on private servers)"; \
	$(BUILD)/labsuite faults --bin $(BUILD)

# The fuzz tree: clang (scripts/bootstrap --with-fuzz installs it and libFuzzer; make test never
# needs them), every object with -fsanitize=fuzzer-no-link,address,undefined, and only the
# harnesses fuzz/fuzz_<name>.c built, each as fuzz_<name>.
configure-fuzz:
	@scripts/bootstrap --with-fuzz
	@test -f $(FUZZ_BUILD)/CMakeCache.txt || \
		CC=clang $(CMAKE) -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLAB_FUZZ=ON

build-fuzz: configure-fuzz
	$(CMAKE) --build $(FUZZ_BUILD) -j$(JOBS)

# scripts/fuzz runs each harness on a scratch copy of its corpus ($(FUZZ_BUILD)/fuzz-work/), one
# line per harness (exec/s, cov, ft, crashes); a crash prints its reproducer and fails the target.
# No servers: a harness is pure.
fuzz: build-fuzz
	@scripts/fuzz --build $(FUZZ_BUILD) --seconds $(FUZZ_SECONDS)

# CI's bound (issue 16: the fuzz smoke at most 2 minutes in all, its build included): the runs
# share a budget of 60 s, two harnesses at a time on CI's 2 cores, so each gets 60 / ceil(n / 2)
# seconds less one for its start (14 s each for 8 harnesses, 7 s for 14, never under 5); each run
# costs about 2 s more (start, final stats), and the fuzz tree's build about 35 s from nothing
# (measured on 2 shared cores): about 1m45 in all.
fuzz-smoke: build-fuzz
	@scripts/fuzz --build $(FUZZ_BUILD) --budget 60 --jobs 2

# down first: the embedded servers keep their data under $(BUILD)/labenv.
clean: down
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

format:
	@command -v clang-format >/dev/null || \
		{ echo "no clang-format: scripts/bootstrap --with-clang-format" >&2; exit 2; }
	find . \( -path ./.git -o -path './$(BUILD)' -o -path './$(ASAN_BUILD)' -o -path './build-*' \) \
		-prune -o \( -name '*.c' -o -name '*.h' \) -type f -print | xargs -r clang-format -i
