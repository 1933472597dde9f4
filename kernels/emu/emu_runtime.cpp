/* emu_runtime.cpp: the CUDA emulator's scheduler, barrier and memory checks.

   Linked into every emulated module and compiled WITHOUT instrumentation (cuda_emu.h gives the
   model; minires/backends/emulator.py builds and calls it). Three parts:

   1. Threads are fibers. Each CUDA thread of a block is a ucontext fiber with its own 64 KiB
      stack (a guard page below it turns an overflow into a crash, not silent corruption), made
      once per launch and reused block after block; blocks run one after another. The scheduler
      goes round the block's threads in order; each runs until it yields: at __syncthreads(),
      before an atomic, when it ends, and before a store to a global word that it loaded since
      it last ran. That last one puts other threads between the load and the store of a
      read-modify-write, so `x[i] = x[i] + v` without atomics loses updates here as on a GPU.
      (The emulator does not switch at every access; the race detector below covers the other
      orders.) A fiber starts with setcontext; after that, switches go through _setjmp and
      _longjmp, which save and restore registers only: swapcontext also saves the signal mask,
      a system call each way, and that was most of the emulator's time.
   2. The barrier. A thread at __syncthreads() waits; when no thread can run and all that remain
      wait, the barrier opens (the block's epoch goes up by one). If some threads have already
      exited while others wait, the launch fails: on a GPU that kernel hangs or misbehaves.
   3. Memory checks. g++ -fsanitize=thread makes the kernel code call __tsan_read4(address)
      before each 4-byte load, __tsan_write4 before each store, and so on. ThreadSanitizer's own
      runtime is NOT linked: the functions at the end of this file are those hooks. Each access
      is classified by its address:
        - a fiber stack: the thread's local variables, nothing to check;
        - the section emu_shared: the __shared__ arrays (`static`, see cuda_emu.h), each
          after a guard of 256 bytes; an access inside a guard is out of bounds;
        - an array argument: global memory;
        - anything else: an out-of-bounds access, reported against the nearest array.
      With race detection on, every 4-byte word of shared and global memory remembers the last
      thread that wrote it, the last that updated it with an atomic, and the threads that read
      it since (up to 16 besides the last), each with the epoch they did it in. Two accesses by
      different threads race unless a __syncthreads() separates them (same block, earlier
      epoch) or both are atomics. Threads of different blocks are ordered within a launch only
      through a fence and an atomic (the "last block" pattern of a grid-wide sum): a thread that
      has called __threadfence() and then updates a word atomically publishes what its block did
      before (earlier epochs, and its own accesses); a later atomic on that word, by a thread of
      another block, makes it visible to that thread, and after the next __syncthreads() to the
      whole block. Any other order across blocks is a race.
      Shared memory starts every block unwritten, so reading a word of it (or adding to it
      atomically) before any thread of the block has written it is reported as well.
   4. The barrier must be the same one: every thread of a block waits at the same
      __syncthreads() (cuda_emu.h passes its source line), or the launch fails.
   5. Two orders: with race detection on, emulator.py runs each launch twice, blocks and threads
      in index order and then in reverse, and reports an output that differs (a race that goes
      through an atomic's return value, which no single access shows).

   What it cannot catch: anything about warps (there are none: code relying on warp lock-step
   passes here and fails on a GPU), an index that runs more than 256 bytes past a __shared__
   array (over its guard, into the next array), and bugs on paths the test inputs never take.
*/
// Fibers switch stacks with _longjmp (part 1). _FORTIFY_SOURCE, on by default in some
// distributions' g++ (Ubuntu's), makes it a checked longjmp that aborts on a jump to a lower
// stack, which every switch to a fiber is: turn it off before any system header sees it.
#undef _FORTIFY_SOURCE
#include "cuda_emu.h"

#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

// The section that holds the kernels' __shared__ arrays and their guards (cuda_emu.h), as the
// linker laid it out (hidden: this library's own; weak: absent when no kernel has shared memory).
extern "C" char __start_emu_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_emu_shared[] __attribute__((weak, visibility("hidden")));
// The guard after the last array: runtime.o is linked after the kernels.
static char emu_shared_guard_last[emu::shared_guard_bytes]
    __attribute__((section("emu_shared"), used));

namespace emu {
namespace {

enum class State { runnable, at_barrier, done };
enum class Kind { read, write, atomic };

struct Fiber {
    ucontext_t context;    // where it starts: fiber_main on its own stack
    jmp_buf resume;        // where it yielded, once started
    bool started;
    State state;
    dim3 thread_idx;
    const char* loads[4];  // the last global words it loaded since it last ran
    int num_loads;
    int barrier_line;      // the source line of the __syncthreads() it waits at
    bool fenced;           // has called __threadfence() in this block
};

// A block's accesses published by a fence and an atomic: those of its threads before epoch
// `epoch`, and `thread`'s own in that epoch (grid-wide linear id + 1, as in Touch).
struct Release {
    int block, epoch, thread;
};

// What an atomic made visible to the running block: `release`, from `epoch` on for the whole
// block, at once for `thread`, the one whose atomic saw it.
struct Acquire {
    Release release;
    int epoch, thread;
};

// The last access to a word: thread is the grid-wide linear thread id + 1 (0: none yet).
struct Touch {
    int thread = 0;
    int epoch = 0;
};

// The last write, read and atomic update of a 4-byte word; readers >= 0 indexes the other
// threads that read it since its last write, concurrently with `read` (up to max_readers).
struct Word {
    Touch write, read, atomic;
    int readers = -1;
};

constexpr std::size_t max_readers = 16;

// A range of emulated device memory: one array argument, or the shared memory.
struct Memory {
    const char* begin;
    const char* end;
    const char* name;
    std::vector<Word> words;  // race-detection state per 4 bytes (empty when detection is off)
    std::vector<std::vector<Touch>> reader_sets;  // Word::readers indexes these
};

constexpr std::size_t stack_bytes = 64 * 1024;

struct Emulator {
    Launch* launch = nullptr;
    void (*body)(void**) = nullptr;
    void** args = nullptr;
    dim3 grid_dim, block_dim, block_idx;
    int threads_per_block = 0;
    int block = 0;    // linear index of the running block
    int epoch = 0;    // barriers the running block has passed
    int current = 0;  // the running fiber
    std::vector<Fiber> fibers;
    jmp_buf scheduler;  // where run_block() switched to the running fiber
    std::vector<Memory> global;
    Memory shared;
    std::vector<char> in_shared_guard;  // per byte of the shared section: 1 inside a guard
    bool running = false;
    bool failed = false;
    std::vector<std::pair<const char*, Release>> releases;  // per atomic word, in this launch
    std::vector<Acquire> acquired;  // by the running block
    // The fiber stacks, one mapping reused by every launch: [stacks, stacks_end).
    char* stacks = nullptr;
    char* stacks_end = nullptr;
    std::size_t stack_stride = 0;
};

Emulator now;            // the launch in progress
std::mutex launch_lock;  // one launch at a time: `now` and the __shared__ statics are global

// -- errors --------------------------------------------------------------------------------------

dim3 unflatten(int index, dim3 dims)
{
    return dim3(index % dims.x, index / dims.x % dims.y, index / (dims.x * dims.y));
}

// "block (1,0,0) thread (3,0,0)" for a grid-wide linear thread id.
void describe_thread(char* out, std::size_t size, int thread)
{
    const dim3 b = unflatten(thread / now.threads_per_block, now.grid_dim);
    const dim3 t = unflatten(thread % now.threads_per_block, now.block_dim);
    std::snprintf(out, size, "block (%u,%u,%u) thread (%u,%u,%u)", b.x, b.y, b.z, t.x, t.y, t.z);
}

int running_thread()
{
    return now.block * now.threads_per_block + now.current;
}

// -- switching between the scheduler and a fiber -------------------------------------------------
// Each _setjmp sits in a small function of its own (noinline): its frame stays alive, on its own
// stack, until the _longjmp back to it, as setjmp requires.

// From the scheduler: run the fiber until it yields (its first run starts it).
__attribute__((noinline)) void switch_to(Fiber& fiber)
{
    if (_setjmp(now.scheduler) == 0) {
        if (fiber.started) {
            _longjmp(fiber.resume, 1);
        }
        fiber.started = true;
        setcontext(&fiber.context);
    }
}

// From the running fiber: back to the scheduler, which may later resume it here.
__attribute__((noinline)) void switch_to_scheduler()
{
    if (_setjmp(now.fibers[now.current].resume) == 0) {
        _longjmp(now.scheduler, 1);
    }
}

// Record why the launch fails; from a fiber, go back to the scheduler for good.
void fail(const char* message, bool in_fiber)
{
    char who[96];
    describe_thread(who, sizeof who, running_thread());
    std::snprintf(now.launch->error, sizeof now.launch->error, "%s: %s", who, message);
    now.failed = true;
    if (in_fiber) {
        switch_to_scheduler();  // never resumed
    }
}

// -- fibers and the barrier ----------------------------------------------------------------------

void yield()
{
    Fiber& fiber = now.fibers[now.current];
    fiber.num_loads = 0;
    switch_to_scheduler();
}

// A fiber runs the kernel once per block; run_block() sets it runnable again for the next one.
void fiber_main()
{
    for (;;) {
        now.body(now.args);
        now.fibers[now.current].state = State::done;
        yield();
    }
}

// Did the running thread load this word since it last ran? Then storing to it completes a
// read-modify-write, and the other threads get to run in between.
bool completes_read_modify_write(const char* p)
{
    Fiber& fiber = now.fibers[now.current];
    for (int i = 0; i < fiber.num_loads && i < 4; ++i) {
        if (fiber.loads[i] == p) {
            return true;
        }
    }
    return false;
}

void reserve_stacks(int threads)
{
    const std::size_t page = sysconf(_SC_PAGESIZE);
    const std::size_t stride = stack_bytes + page;
    if (now.stacks != nullptr && now.stacks + threads * stride <= now.stacks_end) {
        return;
    }
    if (now.stacks != nullptr) {
        munmap(now.stacks, now.stacks_end - now.stacks);
    }
    void* memory = mmap(nullptr, threads * stride, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED) {
        std::perror("cuda emulator: mmap of the fiber stacks");
        std::abort();
    }
    now.stacks = static_cast<char*>(memory);
    now.stacks_end = now.stacks + threads * stride;
    now.stack_stride = stride;
    for (int t = 0; t < threads; ++t) {
        mprotect(now.stacks + t * stride, page, PROT_NONE);  // guard page at the bottom
    }
}

void make_fibers()
{
    const int n = now.threads_per_block;
    reserve_stacks(n);
    now.fibers.resize(n);
    const std::size_t page = now.stack_stride - stack_bytes;
    for (int t = 0; t < n; ++t) {
        Fiber& fiber = now.fibers[t];
        fiber.thread_idx = unflatten(t, now.block_dim);
        getcontext(&fiber.context);
        fiber.context.uc_stack.ss_sp = now.stacks + t * now.stack_stride + page;
        fiber.context.uc_stack.ss_size = stack_bytes;
        fiber.context.uc_link = nullptr;  // fiber_main never returns
        makecontext(&fiber.context, fiber_main, 0);
        fiber.started = false;
    }
}

// Threads (and blocks) run in index order, or in reverse with launch.reverse.
int in_order(int k, int n)
{
    return now.launch->reverse ? n - 1 - k : k;
}

void run_block()
{
    const int n = now.threads_per_block;
    for (Fiber& fiber : now.fibers) {
        fiber.state = State::runnable;
        fiber.num_loads = 0;
        fiber.fenced = false;
    }
    now.epoch = 0;
    now.acquired.clear();
    std::fill(now.shared.words.begin(), now.shared.words.end(), Word());  // fresh shared memory
    now.shared.reader_sets.clear();

    for (;;) {
        for (int k = 0; k < n; ++k) {  // one round: every runnable thread runs until it yields
            const int t = in_order(k, n);
            if (now.fibers[t].state == State::runnable) {
                now.current = t;
                switch_to(now.fibers[t]);
                if (now.failed) {
                    return;
                }
            }
        }
        int done = 0, waiting = 0;
        for (const Fiber& fiber : now.fibers) {
            done += fiber.state == State::done;
            waiting += fiber.state == State::at_barrier;
        }
        if (done == n) {
            return;
        }
        if (done + waiting < n) {
            continue;  // some threads yielded at a store and can go on
        }
        if (done > 0) {  // nobody can run: the waiting threads wait for exited ones
            for (now.current = 0; now.fibers[now.current].state != State::at_barrier;) {
                ++now.current;
            }
            char message[256];
            std::snprintf(message, sizeof message,
                          "waits at __syncthreads() but %d of the block's %d threads have "
                          "already exited: every thread must reach every __syncthreads()",
                          done, n);
            fail(message, false);
            return;
        }
        for (now.current = 0; now.current < n; ++now.current) {
            const int line = now.fibers[now.current].barrier_line;
            if (line != now.fibers[0].barrier_line) {
                char message[256];
                std::snprintf(message, sizeof message,
                              "waits at the __syncthreads() of line %d while thread (%u,%u,%u) "
                              "waits at the one of line %d: every thread of a block must reach "
                              "the same barriers, in the same order", line,
                              now.fibers[0].thread_idx.x, now.fibers[0].thread_idx.y,
                              now.fibers[0].thread_idx.z, now.fibers[0].barrier_line);
                fail(message, false);
                return;
            }
        }
        ++now.epoch;  // everyone has arrived at the same barrier: open it
        for (Fiber& fiber : now.fibers) {
            fiber.state = State::runnable;
        }
    }
}

// -- memory checks -------------------------------------------------------------------------------

// Does `before` happen before the running thread's access? Through a barrier of one block, or
// a fence and an atomic between blocks.
bool ordered(Touch before)
{
    const int me = running_thread() + 1;
    const int block = (before.thread - 1) / now.threads_per_block;
    if (before.thread == me || (block == now.block && before.epoch < now.epoch)) {
        return true;
    }
    for (const Acquire& a : now.acquired) {
        const Release& r = a.release;
        // (the releasing thread's own accesses count up to its barrier epoch at the atomic)
        const bool published = r.block == block && (before.epoch < r.epoch
                                                    || (before.thread == r.thread
                                                        && before.epoch == r.epoch));
        if (published && (a.thread == me || a.epoch < now.epoch)) {
            return true;
        }
    }
    return false;
}

// An atomic on p: take what earlier blocks published on p; publish this block's, if fenced.
void release_and_acquire(const char* p)
{
    const int me = running_thread() + 1;
    for (const auto& [word, release] : now.releases) {
        if (word == p && release.block != now.block) {
            now.acquired.push_back({release, now.epoch, me});
        }
    }
    if (now.fibers[now.current].fenced) {
        now.releases.push_back({p, {now.block, now.epoch, me}});
    }
}

// "element 12 of x" for an array argument (all are 4-byte types), "__shared__ memory" otherwise.
void describe_word(char* out, std::size_t size, const Memory& memory, const char* p)
{
    if (&memory == &now.shared) {
        std::snprintf(out, size, "%s", memory.name);
    } else {
        std::snprintf(out, size, "element %td of %s", (p - memory.begin) / 4, memory.name);
    }
}

void report_race(const Memory& memory, const char* p, const char* access, Touch other,
                 const char* other_access)
{
    char where[128], them[96], message[512];
    describe_word(where, sizeof where, memory, p);
    describe_thread(them, sizeof them, other.thread - 1);
    const bool same_block = (other.thread - 1) / now.threads_per_block == now.block;
    std::snprintf(message, sizeof message,
                  "data race on %s: this thread %s it, %s %s it, and no __syncthreads() "
                  "separates the two%s",
                  where, access, them, other_access,
                  same_block ? "" : " (threads of different blocks are ordered within one "
                                    "launch only by a __threadfence() before an atomic that a "
                                    "later block's atomic sees: use atomics or a second launch)");
    fail(message, true);
}

// Check one word against the earlier accesses it must be ordered after, then record this one.
// Atomics never race with atomics, but they do with plain reads and writes.
void check_word(Memory& memory, const char* p, Word& word, Kind kind, Touch me)
{
    const char* access = kind == Kind::read ? "reads" : kind == Kind::write ? "writes"
                                                                            : "atomically updates";
    if (word.write.thread != 0 && !ordered(word.write)) {
        report_race(memory, p, access, word.write, "wrote");
    }
    if (kind != Kind::atomic && word.atomic.thread != 0 && !ordered(word.atomic)) {
        report_race(memory, p, access, word.atomic, "atomically updated");
    }
    if (kind == Kind::read) {
        if (word.read.thread != 0 && word.read.thread != me.thread && !ordered(word.read)) {
            // Two concurrent readers: remember the earlier one too, for the next write.
            if (word.readers < 0) {
                word.readers = static_cast<int>(memory.reader_sets.size());
                memory.reader_sets.emplace_back();
            }
            std::vector<Touch>& set = memory.reader_sets[word.readers];
            if (set.size() < max_readers) {
                set.push_back(word.read);
            }
        }
        word.read = me;
        return;
    }
    if (word.read.thread != 0 && !ordered(word.read)) {
        report_race(memory, p, access, word.read, "read");
    }
    if (word.readers >= 0) {
        for (const Touch& reader : memory.reader_sets[word.readers]) {
            if (!ordered(reader)) {
                report_race(memory, p, access, reader, "read");
            }
        }
    }
    if (kind == Kind::atomic) {
        word.atomic = me;
    } else {
        word.write = me;
        word.readers = -1;  // later accesses are checked against this write
    }
}

// Called only with race detection on (memory.words is empty when it is off).
void detect_race(Memory& memory, const char* p, std::size_t size, Kind kind)
{
    const bool is_shared = &memory == &now.shared;
    const Touch me = {running_thread() + 1, now.epoch};
    const std::size_t first = (p - memory.begin) / 4, last = (p + size - 1 - memory.begin) / 4;
    for (std::size_t w = first; w <= last; ++w) {
        Word& word = memory.words[w];
        if (kind != Kind::write && is_shared && word.write.thread == 0) {
            fail("reads __shared__ memory that no thread of its block has written yet (a missing "
                 "__syncthreads() between the writes and this read, or shared memory that was "
                 "never initialised?)", true);
        }
        check_word(memory, p, word, kind, me);
    }
}

void report_out_of_bounds(const char* p, std::size_t size, Kind kind)
{
    const Memory* nearest = nullptr;
    std::ptrdiff_t distance = 0;
    for (const Memory& memory : now.global) {
        const std::ptrdiff_t d = p < memory.begin ? memory.begin - p : p - memory.end;
        if (nearest == nullptr || d < distance) {
            nearest = &memory, distance = d;
        }
    }
    char message[512];
    const char* verb = kind == Kind::read ? "reads" : "writes";
    if (nearest == nullptr) {
        std::snprintf(message, sizeof message, "%s %zu bytes at %p, outside every array argument",
                      verb, size, static_cast<const void*>(p));
    } else {
        std::snprintf(message, sizeof message,
                      "out-of-bounds access: %s %zu bytes at element %td of %s, which has %td "
                      "elements", verb, size, (p - nearest->begin) / 4, nearest->name,
                      (nearest->end - nearest->begin) / 4);
    }
    fail(message, true);
}

// Fail if [p, p + size) overlaps a guard, naming the __shared__ array before it.
__attribute__((noinline, cold)) void report_shared_guard(const char* p, std::size_t size,
                                                         Kind kind)
{
    const Launch& launch = *now.launch;
    for (int g = 0; g < launch.num_guards; ++g) {
        const char* begin = now.shared.begin + launch.guard_begin[g];
        const char* end = now.shared.begin + launch.guard_end[g];
        if (p + size > begin && p < end) {
            char message[512];
            std::snprintf(message, sizeof message,
                          "out-of-bounds access: %s %zu bytes at %td bytes past the end of the "
                          "__shared__ array %s", kind == Kind::read ? "reads" : "writes", size,
                          p - begin, launch.guard_after[g]);
            fail(message, true);
        }
    }
}

// An access that lands in a guard between __shared__ arrays ran off the end of the one before.
// Every shared access asks, so the question is a look-up in a byte per byte of the section: an
// access that touches a guard, and is no larger than one, has its first or last byte in it.
void check_shared_guards(const char* p, std::size_t size, Kind kind)
{
    const std::size_t first = p - now.shared.begin, last = first + size - 1;
    if (size > shared_guard_bytes || now.in_shared_guard[first]
        || (last < now.in_shared_guard.size() && now.in_shared_guard[last])) {
        report_shared_guard(p, size, kind);
    }
}

void on_access(const void* address, std::size_t size, Kind kind)
{
    const char* p = static_cast<const char*>(address);
    if (!now.running || (p >= now.stacks && p < now.stacks_end)) {
        return;  // not inside a launch, or a thread's own local variables
    }
    if (p >= now.shared.begin && p < now.shared.end) {
        check_shared_guards(p, size, kind);
        if (!now.shared.words.empty()) {
            detect_race(now.shared, p, size, kind);
        }
        return;
    }
    for (Memory& memory : now.global) {
        if (p >= memory.begin && p + size <= memory.end) {
            if (!memory.words.empty()) {
                detect_race(memory, p, size, kind);
            }
            Fiber& fiber = now.fibers[now.current];
            if (kind == Kind::read) {
                fiber.loads[fiber.num_loads++ % 4] = p;
            } else if (kind == Kind::atomic || completes_read_modify_write(p)) {
                yield();  // let the other threads run between the load and this store
            }
            return;
        }
    }
    report_out_of_bounds(p, size, kind);
}

}  // namespace

// -- what the kernels call -----------------------------------------------------------------------

dim3 thread_idx() { return now.fibers[now.current].thread_idx; }
dim3 block_idx() { return now.block_idx; }
dim3 block_dim() { return now.block_dim; }
dim3 grid_dim() { return now.grid_dim; }

void threadfence()
{
    now.fibers[now.current].fenced = true;
}

void syncthreads(int line)
{
    now.fibers[now.current].state = State::at_barrier;
    now.fibers[now.current].barrier_line = line;
    yield();
}

float atomic_add(float* address, float value)
{
    on_access(address, sizeof value, Kind::atomic);  // checks bounds, lets others run first
    release_and_acquire(reinterpret_cast<const char*>(address));
    const float old = *address;  // then one indivisible read-modify-write: no fiber switch here
    *address = old + value;
    return old;
}

int atomic_add(int* address, int value)
{
    on_access(address, sizeof value, Kind::atomic);
    release_and_acquire(reinterpret_cast<const char*>(address));
    const int old = *address;
    *address = old + value;
    return old;
}

// -- the launch ----------------------------------------------------------------------------------

int run(Launch& launch, void (*body)(void**), void** args)
{
    std::lock_guard<std::mutex> lock(launch_lock);
    now.launch = &launch;
    now.body = body;
    now.args = args;
    now.grid_dim = dim3(launch.grid[0], launch.grid[1], launch.grid[2]);
    now.block_dim = dim3(launch.block[0], launch.block[1], launch.block[2]);
    now.threads_per_block = launch.block[0] * launch.block[1] * launch.block[2];
    launch.error[0] = '\0';

    const bool detect = launch.detect_races != 0;
    now.global.clear();
    for (int i = 0; i < launch.num_arrays; ++i) {
        const char* begin = launch.array_begin[i];
        const std::size_t bytes = launch.array_bytes[i];
        now.global.push_back({begin, begin + bytes, launch.array_name[i], {}, {}});
        now.global.back().words.resize(detect ? bytes / 4 + 2 : 0);  // +2: unaligned ends
    }
    now.shared = {__start_emu_shared, __stop_emu_shared, "__shared__ memory", {}, {}};
    const std::size_t shared_bytes = __stop_emu_shared - __start_emu_shared;
    now.shared.words.resize(detect ? shared_bytes / 4 + 2 : 0);
    now.in_shared_guard.assign(shared_bytes, 0);
    for (int g = 0; g < launch.num_guards; ++g) {
        const std::size_t begin = std::min<std::size_t>(launch.guard_begin[g], shared_bytes);
        const std::size_t end = std::min<std::size_t>(launch.guard_end[g], shared_bytes);
        std::fill(now.in_shared_guard.begin() + begin, now.in_shared_guard.begin() + end, 1);
    }

    make_fibers();
    now.releases.clear();
    now.failed = false;
    now.running = true;
    const int blocks = now.grid_dim.x * now.grid_dim.y * now.grid_dim.z;
    for (int k = 0; k < blocks && !now.failed; ++k) {
        now.block = in_order(k, blocks);
        now.block_idx = unflatten(now.block, now.grid_dim);
        run_block();
    }
    now.running = false;
    now.global.clear();  // frees the race-detection state
    return now.failed ? 1 : 0;
}

}  // namespace emu

// -- the hooks that g++ -fsanitize=thread calls around every load and store of kernel code -------

#define EMU_HOOKS(n)                                                                           \
    void __tsan_read##n(void* p) { emu::on_access(p, n, emu::Kind::read); }                   \
    void __tsan_write##n(void* p) { emu::on_access(p, n, emu::Kind::write); }                 \
    void __tsan_unaligned_read##n(void* p) { emu::on_access(p, n, emu::Kind::read); }         \
    void __tsan_unaligned_write##n(void* p) { emu::on_access(p, n, emu::Kind::write); }       \
    void __tsan_volatile_read##n(void* p) { emu::on_access(p, n, emu::Kind::read); }          \
    void __tsan_volatile_write##n(void* p) { emu::on_access(p, n, emu::Kind::write); }

extern "C" {
EMU_HOOKS(1)
EMU_HOOKS(2)
EMU_HOOKS(4)
EMU_HOOKS(8)
EMU_HOOKS(16)
void __tsan_read_range(void* p, unsigned long size) { emu::on_access(p, size, emu::Kind::read); }
void __tsan_write_range(void* p, unsigned long size) { emu::on_access(p, size, emu::Kind::write); }
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
}
