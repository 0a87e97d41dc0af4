# csvfs — top-level build.
#
#   make            build everything into build/bin
#   make deps       install every Debian package the project and its tests use
#   make check      all tests (unit + real mounts); ends with "N passed, N failed"
#   make unit       the cmocka unit tests only (no root needed)
#   make demo       format a LUN image, mount it, write and verify a VM disk
#   make bench      benchmarks, written to docs/benchmarks.md, docs/benchmarks-cluster.md
#                   docs/benchmarks-snapshot.md and docs/benchmarks-attrcache.md (ls -l, memory)
#   make soak       random operations against a model for SOAK_SECONDS (docs/testing.md)
#   make SAN=1 ...  ASan + UBSan build (into build-san/)
#   make CC=clang   any C11 compiler; warnings are errors under gcc and clang
#   make install    install programs, mount helper, systemd unit, OCF agent, man pages
#                   (PREFIX=/usr/local, DESTDIR honoured; docs/deploy.md)
#   make uninstall  remove exactly what install put there

CC      ?= cc
SAN     ?= 0
V       ?= 0

ifeq ($(SAN),1)
BUILD   := build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD   := build
SANFLAGS :=
endif

PKGS     := fuse3 ext2fs com_err blkid libcpg libquorum libvotequorum libcmap openssl liburing
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# The dlm lock backend is compiled when libdlm is present (design.md §5).
HAVE_LIBDLM := $(shell test -f /usr/include/libdlm.h && echo 1)
ifeq ($(HAVE_LIBDLM),1)
DLM_CFLAGS := -DCSVFS_HAVE_LIBDLM=1
DLM_LIBS   := -ldlm_lt
endif

CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -Wall -Wextra -Werror \
           -Wshadow -Wno-unused-parameter -pthread -I. $(PKG_CFLAGS) $(DLM_CFLAGS) $(SANFLAGS)
LDFLAGS += -pthread $(SANFLAGS)
LDLIBS  += $(PKG_LIBS) $(DLM_LIBS) -luuid -lm

# Modules: every .c in a module directory is library code; programs live in
# fs/main.c (the daemon) and tools/*.c (one program per file).
MODULES   := journal dlm-glue redirect-io fs
LIB_SRC   := $(filter-out fs/main.c,$(foreach m,$(MODULES),$(wildcard $(m)/*.c)))
LIB_OBJ   := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC))
LIB       := $(BUILD)/lib/libcsvfs.a

TOOL_SRC  := $(wildcard tools/*.c)
TOOL_BIN  := $(patsubst tools/%.c,$(BUILD)/bin/%,$(TOOL_SRC))
SCRIPT_BIN := $(BUILD)/bin/csvfs-lab
DAEMON    := $(BUILD)/bin/csvfs

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
# Test helper programs (run against real mounts by the integration tests).
HELPER_SRC := $(wildcard tests/helpers/*.c)
HELPER_BIN := $(patsubst tests/helpers/%.c,$(BUILD)/tests/%,$(HELPER_SRC))

.PHONY: all deps check demo bench soak clean unit fuzz install uninstall deploy-files
# Objects are intermediate to the pattern rules; keep them for incremental builds.
.SECONDARY:
all: $(DAEMON) $(TOOL_BIN) $(SCRIPT_BIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(DAEMON): $(BUILD)/obj/fs/main.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bin/%: $(BUILD)/obj/tools/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bin/%: tools/%.sh
	@mkdir -p $(dir $@)
	install -m 0755 $< $@

# A unit test may name extra link flags (e.g. -Wl,--wrap=dlm_ls_lock for a fake
# libdlm) in tests/unit/<name>.ldflags.
$(BUILD)/tests/test_%: $(BUILD)/obj/tests/unit/test_%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(shell cat tests/unit/test_$*.ldflags 2>/dev/null) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/tests/%: $(BUILD)/obj/tests/helpers/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The cmocka unit tests alone: no root, no FUSE, no cluster (a few seconds).
unit: $(UNIT_BIN)
	@BUILD=$(BUILD) UNIT_ONLY=1 tests/run.sh

deps:
	@tools/deps.sh

check: all $(UNIT_BIN) $(HELPER_BIN)
	@BUILD=$(BUILD) tests/run.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) tools/demo.sh

bench: all $(HELPER_BIN)
	@BUILD=$(BUILD) tests/bench/run.sh
	@BUILD=$(BUILD) tests/bench/cluster.sh
	@BUILD=$(BUILD) tests/bench/file_locks.sh
	@BUILD=$(BUILD) tests/bench/snapshot.sh
	@BUILD=$(BUILD) tests/bench/lsl.sh

# The random_ops runs for as long as asked (SOAK_SECONDS, SOAK_OPS per role); not in check.
soak: all $(HELPER_BIN)
	@BUILD=$(BUILD) tests/soak.sh

# libFuzzer harnesses over every network and on-disk decoder (clang only),
# FUZZ_SECONDS each (make check runs them 20 s each: fuzz_short.sh);
# FUZZ_ONLY=fuzz_image runs one (two long runs side by side: one make each);
# FUZZ_RUNS=N ends each after N inputs (a depth run: FUZZ_SECONDS as the backstop).
FUZZ_ONLY ?= fuzz_*
FUZZ_SRC := $(wildcard $(addprefix tests/fuzz/,$(addsuffix .c,$(FUZZ_ONLY))))
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?=
fuzz:
	@BUILD=$(BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_RUNS=$(FUZZ_RUNS) tests/fuzz/run.sh $(FUZZ_SRC)

# Installation (docs/deploy.md). PREFIX holds the programs, unit and man pages.
# Three places are not under PREFIX because their readers look nowhere else:
# mount(8) finds mount.<type> helpers only in /sbin (/sbin/fs.d, /sbin/fs), and
# Pacemaker finds OCF agents only under its OCF_ROOT, /usr/lib/ocf.
PREFIX         ?= /usr/local
SBINDIR        ?= $(PREFIX)/sbin
MANDIR         ?= $(PREFIX)/share/man
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
MOUNTHELPERDIR ?= /sbin
OCFDIR         ?= /usr/lib/ocf/resource.d/csvfs
DEPLOY_GEN     := $(BUILD)/deploy

# The one list of what install puts where: MODE:SOURCE:DESTINATION.
# uninstall removes exactly these destinations.
INSTALL_FILES := \
	0755:$(DAEMON):$(SBINDIR)/csvfs \
	0755:$(BUILD)/bin/mkfs.csvfs:$(SBINDIR)/mkfs.csvfs \
	0755:$(BUILD)/bin/csvctl:$(SBINDIR)/csvctl \
	0755:$(BUILD)/bin/csvfs-lab:$(SBINDIR)/csvfs-lab \
	0755:$(BUILD)/bin/csvfs-lunpath:$(SBINDIR)/csvfs-lunpath \
	0755:$(DEPLOY_GEN)/mount.fuse.csvfs:$(MOUNTHELPERDIR)/mount.fuse.csvfs \
	0644:$(DEPLOY_GEN)/csvfs@.service:$(SYSTEMDUNITDIR)/csvfs@.service \
	0755:$(DEPLOY_GEN)/csvfs-volume.ocf:$(OCFDIR)/volume \
	$(foreach m,$(wildcard docs/man/*.8),0644:$(m):$(MANDIR)/man8/$(notdir $(m)))

# The deploy files name where the programs are installed (@SBINDIR@); made
# anew on every install, since SBINDIR may differ from the last one.
deploy-files: all
	@mkdir -p $(DEPLOY_GEN)
	@for f in tools/deploy/*.in; do \
		sed 's|@SBINDIR@|$(SBINDIR)|g' "$$f" >"$(DEPLOY_GEN)/$$(basename "$$f" .in)" || exit 1; \
	done

install: deploy-files
	@set -e; for f in $(INSTALL_FILES); do \
		mode=$${f%%:*}; rest=$${f#*:}; src=$${rest%%:*}; dst="$(DESTDIR)$${rest#*:}"; \
		install -D -m "$$mode" "$$src" "$$dst"; echo "installed $$dst"; \
	done

uninstall:
	@for f in $(INSTALL_FILES); do \
		dst="$(DESTDIR)$${f#*:*:}"; \
		if [ -e "$$dst" ] || [ -L "$$dst" ]; then rm -f "$$dst" && echo "removed $$dst"; fi; \
	done
	@rmdir "$(DESTDIR)$(OCFDIR)" 2>/dev/null || true

clean:
	rm -rf build build-san

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
