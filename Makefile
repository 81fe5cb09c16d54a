# storemove — top-level convenience targets. Everything goes through CMake/ctest.
BUILD      ?= build
BUILD_TYPE ?= RelWithDebInfo
# Development builds treat warnings as errors (a plain cmake build, e.g. a packager's, does not).
DEV_FLAGS  := -DSTOREMOVE_WERROR=ON
JOBS       ?= $(shell nproc)

.PHONY: all deps configure build test demo asan tsan fuzz fuzz-asan bench bench-migrate bench-disk bench-memory bench-memory-users package clean

all: build

deps:
	@scripts/install-deps

$(BUILD)/build.ninja: | deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(DEV_FLAGS)

configure: $(BUILD)/build.ninja

build: deps configure
	@grep -q '^STOREMOVE_WERROR:BOOL=ON' $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) $(DEV_FLAGS) >/dev/null  # a tree from before the option
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: build
	@scripts/demo $(BUILD)/tools/storemove

# Address+UB sanitizer build and test run, in its own build tree (tests/lsan.supp: the blocks
# libdb leaves in an environment another process recovered, which its handles can only discard).
asan: deps
	cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSTOREMOVE_SANITIZE=ON $(DEV_FLAGS)
	cmake --build build-asan -j $(JOBS)
	cd build-asan && LSAN_OPTIONS="suppressions=$(CURDIR)/tests/lsan.supp print_suppressions=0" ctest --output-on-failure -j $(JOBS)

# ThreadSanitizer build of the tests that run threads or several processes on one store (of
# migrate_test the in-process migrations: group workers, pipelined sessions, the serve thread, the
# deadline timer, two migrations into one server at once; of
# format_test only the zstd tests, whose decompression worker is a thread, less the two that
# repeat one stream for every offset or byte: the rest is single-threaded and slow under TSan;
# and less the adaptive level's round trip to the lowest rung, whose timing rules (output twice
# the compressing) do not hold with zstd several times slower: it failed 2 runs in 3 on an idle
# machine, its threads are those of the other adaptive tests, which stay; likewise the rise of
# the level behind a slow output, whose premise (the output, ~13 MB/s, slower than level 1) does
# not hold with zstd under TSan on these machines: it failed 2 runs in 2 on 2026-12-03)
# (libdb's own shared-memory mutexes are not instrumented: tests/tsan.supp says which reports
# come from inside libdb and why they are suppressed).
# die_after_fork=0: tests fork children that open a store while the parent has one open, whose
# lock detector and guard threads (store/mboxlist.h) make the parent multi-threaded; TSan does not follow the
# child's new threads, and would otherwise kill the child.
TSAN_TESTS ?= store_concurrency_test store_read_ahead_test tools_write_lock_test format_test net_test stream_test disk_read_test migrate_test tools_moveuser_test arrival_test
tsan: deps
	cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTOREMOVE_TSAN=ON $(DEV_FLAGS)
	cmake --build build-tsan -j $(JOBS) --target storemove $(TSAN_TESTS)
	@set -e; for t in $(TSAN_TESTS); do \
	  bin=$$(find build-tsan/tests -name $$t -type f -perm -u+x | head -n 1); \
	  echo "== tsan: $$t"; \
	  case $$t in format_test) only="--gtest_filter=Zstd*:-*AtEveryOffset*:*ByteFlips*:*LowestRungWithNewFrames:*AnAdaptiveLevelGoesUp*";; \
	    migrate_test) only="--gtest_filter=MigrateIncremental.*:*MigrateLatency*:Migrate.FourGroupsTwoJobsOverTlsPsk:MigrateDeadline.*:*AnotherStoresCopyOnHold*";; \
	    tools_moveuser_test) only="--gtest_filter=*AdministratorPullsManyUsersAtOnce*";; \
	    *) only="";; esac; \
	  (cd $$(dirname $$bin) && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 die_after_fork=0 suppressions=$(CURDIR)/tests/tsan.supp" \
	    ./$$t --gtest_brief=1 $$only); \
	done; echo "tsan: all green"

# libFuzzer targets (tests/fuzz, docs/reliability.md), FUZZ_SECONDS each, in build-fuzz (clang)
# and build-fuzz-asan (clang, ASan+UBSan). Seeds come from ../shared/corpus via $(BUILD)'s storemove.
FUZZ_SECONDS ?= 60
fuzz: build
	scripts/fuzz --seconds $(FUZZ_SECONDS) --bin $(BUILD)/tools/storemove

fuzz-asan: build
	scripts/fuzz --asan --seconds $(FUZZ_SECONDS) --bin $(BUILD)/tools/storemove

bench: build
	@scripts/bench $(BUILD)
	@scripts/bench-migrate $(BUILD)
	@scripts/bench-import $(BUILD)
	@scripts/bench-moveuser $(BUILD)
	@scripts/bench-disk $(BUILD)

# Online migration only (issue 11 targets): hold, passes and wall time through a delay proxy.
bench-migrate: build
	@scripts/bench-migrate $(BUILD)

# On a real disk, cold cache (issue 12): backup, verify, restore against tar, cp -a and parallel readers.
bench-disk: build
	@scripts/bench-disk $(BUILD)

bench-memory: build
	@scripts/bench-memory $(BUILD)

# peak memory of every pass and listing at 20,000 and 100,000 users, and its growth
bench-memory-users: build
	@scripts/bench-memory-users $(BUILD)

# import of 200 users' mbox files onto the disk against restore of the same messages (issue 12)
.PHONY: bench-import bench-moveuser
bench-import: build
	@scripts/bench-import $(BUILD)

bench-moveuser: build
	@scripts/bench-moveuser $(BUILD)

# The Debian package (dist/CMakeLists.txt): a Release build of the tool alone, installed under
# /usr, as build-package/storemove_VERSION_ARCH.deb (install it with dpkg -i).
package: deps
	cmake -S . -B build-package -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
	      -DCMAKE_INSTALL_PREFIX=/usr $(DEV_FLAGS)
	cmake --build build-package -j $(JOBS) --target package
	@ls build-package/storemove_*.deb

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz build-fuzz-asan build-package
