# neuronlab — build, test, demo, bench.
#   make            build/neuronlab and build/libneuronlab.a (release, -O2)
#   make test       install missing Debian packages, build, run every test suite and script
#   make demo       install, build, run the main job on the bundled default model and data
#   make bench      benchmarks (tokens/s, GB/s, peak RSS, ratios against baselines)
#   make debug      build/debug/ with -g -fsanitize=address,undefined
#   make mpi        build-mpi/neuronlab: mpicc, -DNL_MPI, parallel HDF5 (README "Running on a cluster")
#   make check-slow heavy checks kept out of `make test` (incl. 10 min of fuzzing per harness)
#   make fuzz       libFuzzer harnesses of fuzz/ (clang), each run NL_FUZZ_SECONDS (default 60)
#   make install    PREFIX=/usr/local: libneuronlab.so/.a, include/neuronlab/, neuronlab.pc (see the block below)
#   make clean

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2 -march=x86-64-v2 -mtune=native
HDF5_CFLAGS := -I/usr/include/hdf5/serial
HDF5_LIBS   := -L/usr/lib/x86_64-linux-gnu/hdf5/serial -lhdf5
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Wshadow $(OPT) -fopenmp \
           -Iinclude -Isrc -I. $(HDF5_CFLAGS) -I/usr/include/x86_64-linux-gnu/openblas-pthread
LDLIBS  += $(HDF5_LIBS) $(BLAS_LIBS) -lmetis -ljansson -lsqlite3 -lpcre2-8 -lm -fopenmp -lpthread
# OpenBLAS built for OpenMP shares one thread pool with our OpenMP loops; the pthread
# build spins against them on small machines (measured: 30x slower on 2 cores).
BLAS_DIR    := /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_LIBS   := $(BLAS_DIR)/libopenblas.so.0 -Wl,-rpath,$(BLAS_DIR)
SAN     := -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined

# The library: src/ (but the CLI) and analyses/ (one module per analysis, see analyses/README.md).
LIB_SRC := $(shell find src analyses -name '*.c' -not -path 'src/cli/*' 2>/dev/null | sort)
CLI_SRC := $(shell find src/cli -name '*.c' | sort)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/plots.o
PLOTS   := $(sort $(wildcard plots/*.gp))
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
DEPS    := $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)

.PHONY: all deps test demo bench debug debug-cli check-slow clean tests-build fuzz fuzz-build fuzz-corpus mpi
all: $(BUILD)/neuronlab

# Installs missing Debian packages (idempotent; prints the command when not root).
deps:
	@bash scripts/install-deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# ops.c passes 8-float vectors between always-inlined helpers: GCC's note about the AVX
# argument ABI (-Wpsabi) concerns calls that never happen.
$(BUILD)/obj/src/forward/ops.o: CFLAGS += -Wno-psabi

# The gnuplot templates of plots/ compiled into the library (include/neuronlab/report.h).
$(BUILD)/gen/plots.c: $(PLOTS) Makefile
	@mkdir -p $(dir $@)
	@{ echo '/* generated from the plots/ templates by the Makefile: do not edit */'; \
	   echo '#include "neuronlab/report.h"'; \
	   echo 'const nl_plot_template nl_plot_templates[] = {'; \
	   for f in $(PLOTS); do \
	     printf '    {"%s",\n' "$$(basename $$f .gp)"; \
	     sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/     "/' -e 's/$$/\\n"/' $$f; \
	     echo '    },'; \
	   done; \
	   echo '};'; \
	   echo 'const int nl_n_plot_templates = sizeof nl_plot_templates / sizeof nl_plot_templates[0];'; } > $@

$(BUILD)/obj/gen/plots.o: $(BUILD)/gen/plots.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libneuronlab.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/neuronlab: $(CLI_OBJ) $(BUILD)/libneuronlab.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libneuronlab.a $(LDLIBS)

# One Criterion binary per tests/test_<module>.c.
$(BUILD)/tests/%: tests/%.c tests/testutil.h $(BUILD)/libneuronlab.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $< $(BUILD)/libneuronlab.a $(LDLIBS) -lcriterion

tests-build: $(BUILD)/neuronlab $(TEST_BIN)

# Every Criterion suite and every tests/*.sh script; ends with "N passed, M failed".
# The sanitizer build of the CLI runs the bad-input script too (tests/cli_errors.sh); the MPI
# build is made when Open MPI and the parallel HDF5 are installed (tests/mpi.sh runs it).
test: deps
	@$(MAKE) --no-print-directory tests-build
	@$(MAKE) --no-print-directory debug-cli
	@if $(MPI_PRESENT); then $(MAKE) --no-print-directory mpi; fi
	@bash scripts/run-tests.sh $(BUILD)

demo: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/demo.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory all
	@bash bench/run.sh $(BUILD)
	@bash bench/tokenizer.sh $(BUILD)
	@bash bench/sparsity.sh $(BUILD)
	@bash bench/train.sh $(BUILD)
	@bash bench/moe.sh $(BUILD)
	@bash bench/stats.sh $(BUILD)
	@bash bench/gguf.sh $(BUILD)
	@/usr/bin/python3 bench/moe.py $(BUILD)
	@bash bench/bf16.sh $(BUILD)
	@bash bench/7b.sh $(BUILD)   # the 7B-shaped bf16 run: only with NL_BENCH_7B=1 (13.5 GB, long)

check-slow: deps
	@$(MAKE) --no-print-directory tests-build
	@NL_SLOW=1 bash scripts/run-tests.sh $(BUILD)
	@$(MAKE) --no-print-directory fuzz NL_FUZZ_SECONDS=600

# Sanitizer build of the CLI and the tests into build/debug/.
debug:
	@$(MAKE) --no-print-directory BUILD=build/debug OPT="$(SAN)" LDLIBS="$(LDLIBS) -fsanitize=address,undefined" \
	    build/debug/neuronlab $(TEST_SRC:tests/%.c=build/debug/tests/%)

debug-cli:
	@$(MAKE) --no-print-directory BUILD=build/debug OPT="$(SAN)" LDLIBS="$(LDLIBS) -fsanitize=address,undefined" build/debug/neuronlab

# Fuzzing (fuzz/README.md): one libFuzzer harness per parser, fuzz/fuzz_<name>.c, built with
# clang under ASan/UBSan into build/fuzz/ (the library too, instrumented for coverage).
# `make fuzz` runs each for NL_FUZZ_SECONDS from the seeds of fuzz/corpus/<name>/ (new
# inputs go to build/fuzz/corpus/<name>/, crashes to build/fuzz/crashes/<name>/); the test
# runner's tests/fuzz_smoke.sh replays fuzz/crashes/ and runs each a few seconds.
FUZZ_CC      ?= clang
FUZZ_SAN     := -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
FUZZ_NAMES   := $(sort $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c)))
NL_FUZZ_SECONDS ?= 60

$(BUILD)/fuzz/fuzz_%: fuzz/fuzz_%.c $(wildcard fuzz/*.h) $(BUILD)/libneuronlab.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -o $@ $< $(BUILD)/libneuronlab.a $(LDLIBS)

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=build/fuzz CC=$(FUZZ_CC) OPT="$(FUZZ_SAN)" \
	    LDLIBS="$(LDLIBS) -fsanitize=address,undefined" $(FUZZ_NAMES:%=build/fuzz/fuzz/fuzz_%)

# Regenerates the seeds of fuzz/corpus/ from tests/fixtures (and small generated files).
fuzz-corpus:
	@bash fuzz/make-corpus.sh

fuzz: fuzz-build
	@bash fuzz/run.sh build/fuzz $(NL_FUZZ_SECONDS) $(FUZZ_NAMES)

# The MPI build: the same sources with mpicc and -DNL_MPI (the MPI code: src/core/mpi.c, src/store/h5store_mpi.inc)
# against Debian's parallel HDF5 (libhdf5-openmpi-dev), into build-mpi/. The serial build
# above stays the default and does not change.
MPI_BUILD       := build-mpi
MPI_PRESENT      = command -v mpicc >/dev/null 2>&1 && [ -d /usr/include/hdf5/openmpi ]
MPI_HDF5_CFLAGS  = $(shell pkg-config --cflags hdf5-openmpi 2>/dev/null || echo -I/usr/include/hdf5/openmpi)
MPI_HDF5_LIBS    = $(shell pkg-config --libs hdf5-openmpi 2>/dev/null || echo -L/usr/lib/x86_64-linux-gnu/hdf5/openmpi -lhdf5)

mpi:
	@$(MPI_PRESENT) || { echo "make mpi needs Open MPI and the parallel HDF5: apt-get install libopenmpi-dev openmpi-bin libhdf5-openmpi-dev (make deps)" >&2; exit 1; }
	@$(MAKE) --no-print-directory BUILD=$(MPI_BUILD) CC=mpicc HDF5_CFLAGS="$(MPI_HDF5_CFLAGS) -DNL_MPI" \
	    HDF5_LIBS="$(MPI_HDF5_LIBS)" $(MPI_BUILD)/neuronlab

# ---- shared library, `make install`, the C API and the Python package -----------------------
# build/libneuronlab.so (beside the .a, from the same objects, all compiled -fPIC) exports only
# the public API: the functions and data declared in include/neuronlab/*.h (a linker version
# script generated from the headers and the library's defined symbols). Its soname carries the
# version of include/neuronlab/common.h (0.1.0 → libneuronlab.so.0.1). A change of CC or CFLAGS
# rebuilds every object (build/cflags.stamp). `make install PREFIX=/usr/local [DESTDIR=]` installs
# the .so, the .a, the public headers and lib/pkgconfig/neuronlab.pc; examples/ and python/ use them
# (tests/examples.sh, tests/python.sh).
CFLAGS      += -fPIC
PREFIX      ?= /usr/local
NL_VER      := $(shell sed -n 's/^\#define NL_VERSION "\(.*\)"/\1/p' include/neuronlab/common.h)
NL_SOVER    := $(word 1,$(subst ., ,$(NL_VER))).$(word 2,$(subst ., ,$(NL_VER)))
NL_SO       := $(BUILD)/libneuronlab.so
NL_PUB_H    := $(sort $(wildcard include/neuronlab/*.h))

.PHONY: install nl-cflags-force
all: $(NL_SO)
tests-build: $(NL_SO)

# Rewritten only when the compile line changes, so objects rebuild exactly then (git's GIT-CFLAGS).
$(BUILD)/cflags.stamp: nl-cflags-force
	@mkdir -p $(BUILD)
	@printf '%s\n' '$(CC) $(CFLAGS)' | cmp -s - $@ 2>/dev/null || printf '%s\n' '$(CC) $(CFLAGS)' > $@
$(LIB_OBJ) $(CLI_OBJ) $(TEST_BIN): $(BUILD)/cflags.stamp

# The version script: symbols the library defines that a public header names; all else is local.
$(BUILD)/neuronlab.map: $(BUILD)/libneuronlab.a $(NL_PUB_H)
	@nm -g --defined-only $(BUILD)/libneuronlab.a | awk 'NF == 3 { print $$3 }' | sort -u > $@.defs
	@grep -ho '\bnl_[A-Za-z0-9_]*' $(NL_PUB_H) | sort -u | comm -12 - $@.defs > $@.syms
	@{ echo 'NEURONLAB_$(NL_SOVER) {'; echo '  global:'; sed 's/.*/    &;/' $@.syms; echo '  local: *;'; echo '};'; } > $@
	@rm -f $@.defs $@.syms

$(NL_SO).$(NL_VER): $(LIB_OBJ) $(BUILD)/neuronlab.map
	$(CC) -shared -Wl,-soname,libneuronlab.so.$(NL_SOVER) -Wl,--version-script=$(BUILD)/neuronlab.map -Wl,-z,defs \
	    -o $@ $(LIB_OBJ) $(LDLIBS)

$(NL_SO): $(NL_SO).$(NL_VER)
	@ln -sf libneuronlab.so.$(NL_VER) $(NL_SO).$(NL_SOVER)
	@ln -sf libneuronlab.so.$(NL_SOVER) $@

install: $(NL_SO) $(BUILD)/libneuronlab.a
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/neuronlab
	install -m 644 $(BUILD)/libneuronlab.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(NL_SO).$(NL_VER) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libneuronlab.so.$(NL_VER) $(DESTDIR)$(PREFIX)/lib/libneuronlab.so.$(NL_SOVER)
	ln -sf libneuronlab.so.$(NL_SOVER) $(DESTDIR)$(PREFIX)/lib/libneuronlab.so
	install -m 644 $(NL_PUB_H) $(DESTDIR)$(PREFIX)/include/neuronlab/
	@{ echo 'prefix=$(PREFIX)'; echo 'libdir=$${prefix}/lib'; echo 'includedir=$${prefix}/include'; echo; \
	   echo 'Name: neuronlab'; echo 'Description: neuron-level analysis of transformer language models'; \
	   echo 'Version: $(NL_VER)'; echo 'Cflags: -I$${includedir}'; echo 'Libs: -L$${libdir} -lneuronlab'; \
	   echo 'Libs.private: $(LDLIBS)'; } > $(DESTDIR)$(PREFIX)/lib/pkgconfig/neuronlab.pc
	@echo "installed neuronlab $(NL_VER) into $(DESTDIR)$(PREFIX) (pkg-config: $(PREFIX)/lib/pkgconfig/neuronlab.pc)"

clean:
	rm -rf build $(MPI_BUILD)

-include $(DEPS)
