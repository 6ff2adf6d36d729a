/*
 * pool.c: the thread pool that splits large arrays across CPUs, and the
 * thread shims it stands on (pthreads or Win32).
 */
#include "leaky.h"

#ifdef LEAKY_X86_64
#include <immintrin.h>  /* _mm_pause */
#endif

/*
 * Large arrays are split across a small persistent pool of OS threads
 * (pthreads or Win32; no OpenMP runtime to ship).  The calling thread does
 * the first part itself.  Hand-off costs microseconds: a worker that has
 * just finished spins briefly on the ticket before it sleeps on a
 * condition variable, so back-to-back calls never pay a wake-up.
 *
 * - Fork: a pthread_atfork child hook counts the forks this process
 *   descends through; the pool remembers the count it was made under, so a
 *   child (or a grandchild, whatever its pid) sees another count, forgets
 *   the inherited copy (its threads do not exist there, its lock may have
 *   been held at the fork) and makes a pool of its own.
 * - Many Python threads: one job at a time; a caller that finds the pool
 *   busy runs its kernel alone instead of waiting.
 * - Interpreter exit: module free stops and joins the workers.
 * Workers never touch Python objects or the GIL.
 */
#define LEAKY_SPIN_ROUNDS 20000

#ifdef _WIN32
/* Without it <windows.h> pulls in rpc.h and with it the SDK's rpcndr.h,
   whose `#define small char` rewrites any later identifier `small`. */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
typedef HANDLE ThreadHandle;
typedef SRWLOCK Mutex;
typedef CONDITION_VARIABLE Cond;
#define mutex_init(m) InitializeSRWLock(m)
#define mutex_destroy(m) ((void)0)
#define mutex_lock(m) AcquireSRWLockExclusive(m)
#define mutex_unlock(m) ReleaseSRWLockExclusive(m)
#define cond_init(c) InitializeConditionVariable(c)
#define cond_destroy(c) ((void)0)
#define cond_wait(c, m) SleepConditionVariableSRW((c), (m), INFINITE, 0)
#define cond_broadcast(c) WakeAllConditionVariable(c)
#else
#include <pthread.h>
#include <unistd.h>
typedef pthread_t ThreadHandle;
typedef pthread_mutex_t Mutex;
typedef pthread_cond_t Cond;
#define mutex_init(m) pthread_mutex_init((m), NULL)
#define mutex_destroy(m) pthread_mutex_destroy(m)
#define mutex_lock(m) pthread_mutex_lock(m)
#define mutex_unlock(m) pthread_mutex_unlock(m)
#define cond_init(c) pthread_cond_init((c), NULL)
#define cond_destroy(c) pthread_cond_destroy(c)
#define cond_wait(c, m) pthread_cond_wait((c), (m))
#define cond_broadcast(c) pthread_cond_broadcast(c)
#endif

/* A spin-wait hint, so a spinning worker yields its core's resources to a
   sibling hyperthread (x86-64) or signals a spin loop (arm64). */
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define cpu_relax() _mm_pause()
#elif defined(_MSC_VER) && defined(_M_ARM64)
#include <intrin.h>  /* MSVC and clang-cl: no GNU asm there */
#define cpu_relax() __yield()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

static Py_ssize_t
part_start(const ParallelJob *job, int part)
{
    Py_ssize_t extent = job->plan->shape[0];
    Py_ssize_t start = (Py_ssize_t)((double)extent * part / job->nparts);
    if (job->plan->ndim == 1 && part > 0 && part < job->nparts) {
        start &= ~(Py_ssize_t)63;  /* whole cache lines per part on 1-d runs */
    }
    return part >= job->nparts ? extent : start;
}

static void
run_part(const ParallelJob *job, int part)
{
    assert(part >= 0 && part < job->nparts);
    Py_ssize_t lo = part_start(job, part), hi = part_start(job, part + 1);
    assert(lo >= 0 && hi <= job->plan->shape[0]);
    if (hi <= lo) {
        return;
    }
    LoopPlan sub = *job->plan;
    char *base[MAX_OPERANDS];
    sub.shape[0] = hi - lo;
    for (int op = 0; op < job->nops; op++) {
        base[op] = job->base[op] + lo * job->plan->strides[op][0];
    }
    plan_run(&sub, job->nops, base, job->loop, job->ctx);
}

/*
 * The hand-off protocol, argued in one place.
 *
 * The ticket.  One 64-bit word holds everything a worker needs to decide
 * whether it may take a part, so that it decides from the word alone:
 *
 *     bits 48..62  generation  job number, wrapping (workers wait for it to change)
 *     bits 32..47  helpers     workers this job may use (threads= minus the caller)
 *     bits 16..31  nparts      the job's part count
 *     bits  0..15  next        index of the next unclaimed part
 *
 * (LEAKY_MAX_THREADS keeps nparts, at most 4 threads' worth, and helpers
 * below 2^16; bit 63 stays 0.)  A claimer loads the ticket; if
 * next < nparts and, for a worker, its index < helpers, it tries the
 * compare-and-swap ticket -> ticket + 1 (which only increments `next`), and
 * if that succeeds it owns part `next` and only then reads `job` to run it.
 * Nobody reads `job` for any other reason.
 *
 * Ownership: a caller owns the pool while `busy` is 1 (pool_for_caller's
 * compare-and-swap, acquire; pool_release stores 0, release), so one
 * pool_run runs at a time and only it writes `job`, `done_parts` and the
 * ticket (other than by claims).
 *
 * pool_run publishes a job as: `job` (plain stores), `done_parts` = 0, then
 * the new ticket (g + 1, helpers, nparts, 0) with release order; then, under
 * the lock, it wakes the sleepers.  It runs parts itself, and returns only
 * once `done_parts` (acquire) equals nparts.
 *
 * Why no stale ticket can claim a part of a newer job, and why nobody reads
 * `job` while pool_run writes it:
 *  1. A successful compare-and-swap read the word current at that moment,
 *     and it equalled the claimer's ticket.  The claimer decided from that
 *     word's fields only, so its decision is right for the job whose ticket
 *     is current, whichever job it thought it was looking at: even if the
 *     generation wrapped, an equal word means the same helpers, part count
 *     and next part of the job installed now.  The swap's acquire
 *     synchronises with the release store that installed that ticket (each
 *     claim is an acquire-release read-modify-write, so it continues that
 *     release sequence), so the claimer sees the complete `job` and the
 *     zeroed `done_parts`.
 *  2. Each part is claimed once: claims move `next` up by one per swap
 *     and only while next < nparts, so part i goes to the one swap from
 *     `next` = i, and the word never carries into the nparts field.
 *  3. pool_run rewrites `job` only after the previous pool_run saw all
 *     nparts parts counted done (each count is an acquire-release add after
 *     the part's reads and writes; that caller's acquire load of the final
 *     count, then its release of `busy` and the next caller's acquire of
 *     it, order every read of the old `job` before the new writes).  By
 *     then the old ticket has next == nparts, so no swap on it succeeds: a
 *     worker still holding an older value fails its swap against whatever
 *     word is current, or, by 1., claims from the new job correctly once
 *     it is installed.
 *  4. Hence `done_parts` counts only parts of the current job, each once,
 *     and when it reaches nparts no part of it is still running: the caller
 *     returns with its output complete.
 *
 * threads=N means N: a worker takes parts only while its index is below the
 * ticket's helpers (without this check every awake worker would take
 * parts).  The caller has no index and takes any part, so a call never
 * waits for a thread that has not started: when the CPUs are busy with
 * other threads (another library's spinning pool, say) it degrades to the
 * serial speed instead of waiting for a time slice.
 *
 * Completion: the claimer of a part reads nparts from its ticket, runs the
 * part, adds one to `done_parts` and never touches the job again; whoever
 * makes it nparts broadcasts `done` under the lock.  The caller spins
 * briefly, then checks under the same lock before each wait, so the
 * broadcast cannot fall between its check and its sleep.  A late broadcast
 * (the caller saw the count while spinning and is already on its next
 * job) only wakes a waiter that checks again.
 *
 * Sleeping: a worker spins on the ticket's generation, then sleeps on
 * `work` under the lock, checking the generation (and `stop`) under it;
 * pool_run stores the ticket before it takes the lock to broadcast, and
 * `sleepers` is only touched under the lock, so a sleeper either sees the
 * new generation or is woken.  A generation that wraps all the way round
 * while a worker sleeps only costs that job a helper.
 */
typedef struct {
    ThreadPool *pool;
    int index;  /* 0 .. nworkers-1: takes parts only if index < the ticket's helpers */
    long long parts_run;  /* for tests (_worker_parts): which workers did work */
    ThreadHandle thread;
} Worker;

struct ThreadPool {
    long long ticket;      /* generation | helpers | nparts | next, see above */
    long long done_parts;  /* parts of the current job finished */
    long long busy;        /* a caller owns the pool */
    long long stop;
    long long fork_count;  /* process_fork_count() when this pool was made */
    int sleepers;          /* workers asleep on `work` (guarded by lock) */
    int nworkers;
    ParallelJob job;       /* read only by the claimer of one of its parts */
    Mutex lock;
    Cond work;
    Cond done;
    Worker workers[];      /* nworkers of them */
};

#define TICKET_FIELD 0xffffLL
#define TICKET_NEXT(ticket) ((int)((ticket) & TICKET_FIELD))
#define TICKET_NPARTS(ticket) ((int)(((ticket) >> 16) & TICKET_FIELD))
#define TICKET_HELPERS(ticket) ((int)(((ticket) >> 32) & TICKET_FIELD))
#define TICKET_GENERATION(ticket) (((ticket) >> 48) & 0x7fffLL)

/* 4 parts per thread at most (driver.c), and helpers below the thread count */
_Static_assert(4 * LEAKY_MAX_THREADS <= TICKET_FIELD, "nparts and helpers must fit the ticket");

static long long
ticket_for(long long generation, int helpers, int nparts)
{
    return ((generation & 0x7fffLL) << 48) | ((long long)helpers << 32) |
           ((long long)nparts << 16);
}

/* Claims and runs parts while the ticket offers one to `index` (a worker's;
   -1 for the caller, who takes any part); counts them in *parts_run (a
   worker's tally; NULL for the caller).  Returns the last ticket it read. */
static long long
pool_work_on(ThreadPool *pool, int index, long long *parts_run)
{
    long long ticket = ATOMIC_LOAD(&pool->ticket);
    for (;;) {
        const int next = TICKET_NEXT(ticket), nparts = TICKET_NPARTS(ticket);
        if (next >= nparts || index >= TICKET_HELPERS(ticket)) {
            return ticket;
        }
        if (ATOMIC_CAS(&pool->ticket, ticket, ticket + 1)) {
            run_part(&pool->job, next);  /* ours: the job cannot change until we count it */
            if (parts_run != NULL) {
                ATOMIC_ADD(parts_run, 1);
            }
            if (ATOMIC_ADD(&pool->done_parts, 1) + 1 == nparts) {
                mutex_lock(&pool->lock);  /* pairs with the caller's check under the lock */
                cond_broadcast(&pool->done);
                mutex_unlock(&pool->lock);
            }
        }
        ticket = ATOMIC_LOAD(&pool->ticket);
    }
}

/* Waits for a ticket whose generation is not `seen`; 0 when told to stop. */
static int
pool_wait_for_job(ThreadPool *pool, long long seen)
{
    for (int round = 0; round < LEAKY_SPIN_ROUNDS; round++) {
        if (ATOMIC_LOAD(&pool->stop)) {
            return 0;
        }
        if (TICKET_GENERATION(ATOMIC_LOAD(&pool->ticket)) != seen) {
            return 1;
        }
        cpu_relax();
    }
    mutex_lock(&pool->lock);
    pool->sleepers++;
    while (TICKET_GENERATION(ATOMIC_LOAD(&pool->ticket)) == seen && !ATOMIC_LOAD(&pool->stop)) {
        cond_wait(&pool->work, &pool->lock);
    }
    pool->sleepers--;
    mutex_unlock(&pool->lock);
    return !ATOMIC_LOAD(&pool->stop);
}

#ifdef _WIN32
static DWORD WINAPI
worker_main(LPVOID arg)
#else
static void *
worker_main(void *arg)
#endif
{
    Worker *self = (Worker *)arg;
    ThreadPool *pool = self->pool;
    long long seen = 0;  /* the generation of the pool's first ticket */
    while (pool_wait_for_job(pool, seen)) {
        seen = TICKET_GENERATION(pool_work_on(pool, self->index, &self->parts_run));
    }
#ifdef _WIN32
    return 0;
#else
    return NULL;
#endif
}

/*
 * Forks this process descends through, counted in each child by a
 * pthread_atfork hook (registered once per process, before the first pool
 * is made; CPython never unloads an extension, so the hook's code stays).
 * A pool made under another count was inherited through fork.  Windows has
 * no fork: always 0 there.
 */
#ifdef _WIN32
static int
fork_hook_ready(void)
{
    return 1;
}

static long long
process_fork_count(void)
{
    return 0;
}
#else
static long long fork_count;
static int fork_hook_registered;
static pthread_once_t fork_hook_once = PTHREAD_ONCE_INIT;

static void
count_fork_in_child(void)
{
    ATOMIC_ADD(&fork_count, 1);  /* the child has one thread: this one */
}

static void
register_fork_hook(void)
{
    fork_hook_registered = pthread_atfork(NULL, NULL, count_fork_in_child) == 0;
}

/* 1 once the hook is in place (0 if pthread_atfork failed: then no pool). */
static int
fork_hook_ready(void)
{
    pthread_once(&fork_hook_once, register_fork_hook);
    return fork_hook_registered;
}

static long long
process_fork_count(void)
{
    return ATOMIC_LOAD(&fork_count);
}
#endif

#ifdef __linux__
/* The first `size - 1` bytes of a file into buf, NUL-terminated; 0 if unreadable. */
static int
read_text_file(const char *path, char *buf, size_t size)
{
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        return 0;
    }
    size_t got = fread(buf, 1, size - 1, file);
    fclose(file);
    buf[got] = '\0';
    return got > 0;
}

/* dir/name into out; 0 if it does not fit. */
static int
join_path(char *out, size_t size, const char *dir, const char *name)
{
    int length = snprintf(out, size, "%s/%s", dir, name);
    return length >= 0 && (size_t)length < size;
}

/* The CPU time one cgroup directory allows, in CPUs (quota / period); 0 if
   it sets no limit.  v2: cpu.max ("max 100000" or "200000 100000"); v1:
   cpu.cfs_quota_us (-1 for none) over cpu.cfs_period_us. */
static double
cgroup_dir_cpus(const char *dir, int v2)
{
    char path[4200], text[128];
    long long quota = 0, period = 0;
    if (v2) {
        if (!join_path(path, sizeof path, dir, "cpu.max") ||
            !read_text_file(path, text, sizeof text) ||
            sscanf(text, "%lld %lld", &quota, &period) != 2) {
            return 0;  /* absent, or "max ...": no limit here */
        }
    }
    else {
        if (!join_path(path, sizeof path, dir, "cpu.cfs_quota_us") ||
            !read_text_file(path, text, sizeof text) || sscanf(text, "%lld", &quota) != 1) {
            return 0;
        }
        if (!join_path(path, sizeof path, dir, "cpu.cfs_period_us") ||
            !read_text_file(path, text, sizeof text) || sscanf(text, "%lld", &period) != 1) {
            return 0;
        }
    }
    return quota > 0 && period > 0 ? (double)quota / (double)period : 0;
}

/*
 * The CPUs' worth of time this process's cgroup lets it use, rounded up; 0
 * when no quota applies.  A container limited to 2 CPUs on a 64-core host
 * still has all 64 in its affinity mask, and a 64-thread pool there only
 * queues behind the quota.  /proc/self/cgroup names the process's cgroup:
 * "0::/path" (v2) or "N:cpu,cpuacct:/path" (v1).  Every directory from
 * that cgroup up to the hierarchy's mount point may set a limit, and the
 * smallest applies; where the path does not exist under the mount (a
 * container that sees only its own cgroup, mounted at the top, but the
 * host's path), the mount point is still read.  Every file is read under
 * `root` ("" for the real ones; tests pass a fabricated tree).
 */
static long
cgroup_cpu_limit(const char *root)
{
    char path[4200], line[4200];
    if (!join_path(path, sizeof path, root, "proc/self/cgroup")) {
        return 0;
    }
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        return 0;
    }
    double limit = 0;
    while (fgets(line, sizeof line, file) != NULL) {
        char *controllers = strchr(line, ':');
        char *group = controllers == NULL ? NULL : strchr(controllers + 1, ':');
        if (group == NULL) {
            continue;
        }
        *controllers++ = '\0';
        *group++ = '\0';
        group[strcspn(group, "\n")] = '\0';
        int v2 = strcmp(line, "0") == 0 && *controllers == '\0';
        int v1_cpu = 0;  /* "cpu" among the comma-separated controllers */
        for (const char *item = controllers; *item != '\0';) {
            size_t length = strcspn(item, ",");
            v1_cpu |= length == 3 && strncmp(item, "cpu", 3) == 0;
            item += length + (item[length] == ',');
        }
        if (!v2 && !v1_cpu) {
            continue;
        }
        const char *mounts[2] = {"/sys/fs/cgroup", NULL};
        if (!v2) {
            mounts[0] = "/sys/fs/cgroup/cpu,cpuacct";
            mounts[1] = "/sys/fs/cgroup/cpu";
        }
        for (int m = 0; m < 2 && mounts[m] != NULL; m++) {
            char dir[4200];
            int base = snprintf(dir, sizeof dir, "%s%s", root, mounts[m]);
            if (base < 0 || (size_t)base >= sizeof dir) {
                continue;
            }
            int rest = snprintf(dir + base, sizeof dir - (size_t)base, "%s", group);
            if (rest < 0 || (size_t)rest >= sizeof dir - (size_t)base) {
                continue;  /* too long to be a real cgroup path */
            }
            /* the cgroup, then each parent up to the mount point */
            for (;;) {
                double cpus = cgroup_dir_cpus(dir, v2);
                if (cpus > 0 && (limit == 0 || cpus < limit)) {
                    limit = cpus;
                }
                char *slash = strrchr(dir + base, '/');
                if (slash == NULL) {
                    break;
                }
                *slash = '\0';
            }
        }
    }
    fclose(file);
    if (limit <= 0) {
        return 0;
    }
    long whole = (long)limit;
    return whole + (limit > (double)whole);  /* 1.5 CPUs' worth: 2 threads */
}
#endif /* __linux__ */

#ifdef _WIN32
static long
count_bits(unsigned long long mask)
{
    long count = 0;
    for (; mask != 0; mask &= mask - 1) {
        count++;
    }
    return count;
}

/* winnt.h's value; older mingw-w64 headers (Debian's 10) lack the name */
#ifndef JOB_OBJECT_CPU_RATE_CONTROL_MIN_MAX_RATE
#define JOB_OBJECT_CPU_RATE_CONTROL_MIN_MAX_RATE 0x10
#endif

/*
 * The CPUs this process may use on Windows.  Before Windows 11 a process's
 * threads run in one processor group (at most 64 CPUs), its affinity mask
 * within that group (which a job object's affinity limit narrows too);
 * from Windows 11 on, a process without an explicit affinity spans every
 * group, and GetProcessGroupAffinity says so.  A job object may also cap
 * the CPU rate: CpuRate (or MaxRate) is in hundredths of a percent of all
 * the machine's CPUs, so a 25% cap on 8 CPUs allows 2 CPUs' worth.
 */
static long
windows_cpu_count(void)
{
    HANDLE process = GetCurrentProcess();
    USHORT groups[64];
    USHORT ngroups = 64;
    DWORD_PTR process_mask = 0, system_mask = 0;
    long total = (long)GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
    long count = total;
    if (GetProcessGroupAffinity(process, &ngroups, groups) && ngroups > 1) {
        count = total;  /* spans groups: every CPU of the machine */
    }
    else if (GetProcessAffinityMask(process, &process_mask, &system_mask) && process_mask != 0) {
        count = count_bits((unsigned long long)process_mask);  /* its group, as its mask allows */
    }
    JOBOBJECT_CPU_RATE_CONTROL_INFORMATION rate;
    memset(&rate, 0, sizeof rate);
    if (QueryInformationJobObject(NULL, JobObjectCpuRateControlInformation, &rate, sizeof rate,
                                  NULL) &&
        (rate.ControlFlags & JOB_OBJECT_CPU_RATE_CONTROL_ENABLE)) {
        unsigned long long cap = 0;  /* hundredths of a percent of all CPUs */
        if (rate.ControlFlags & JOB_OBJECT_CPU_RATE_CONTROL_HARD_CAP) {
            cap = rate.CpuRate;
        }
        else if (rate.ControlFlags & JOB_OBJECT_CPU_RATE_CONTROL_MIN_MAX_RATE) {
            cap = (rate.CpuRate >> 16) & 0xffff;  /* MaxRate, the high WORD (mingw names no MinRate/MaxRate) */
        }
        if (cap > 0) {
            long allowed = (long)((cap * (unsigned long long)total + 9999) / 10000);
            if (allowed < count) {
                count = allowed;
            }
        }
    }
    return count;
}
#endif /* _WIN32 */

/*
 * The thread cap, LEAKY_MAX_THREADS = 1024: the CPUs this process may use
 * up to there, or LEAKY_NUM_THREADS and threads= up to there.  Not lower:
 * a 128- or 256-core machine gets all its cores (the worker arrays are
 * sized when the pool is made, so the cap costs nothing).  Not higher:
 * 1024 is all that glibc's cpu_set_t (the affinity mask read below) can
 * describe, so no count read from it exceeds it; a leaky ReLU is bound by
 * memory bandwidth long before that many threads; and it bounds the
 * threads a mistyped LEAKY_NUM_THREADS can start (each with its own
 * stack).  The ticket's fields (above) would allow up to 16,383.
 *
 * "May use": the affinity mask (Linux) or the process's processor groups
 * and affinity (Windows), then any CPU quota: a Linux cgroup's cpu.max (or
 * v1 cfs quota), a Windows job object's CPU rate cap.  `cgroup_root` is
 * where the cgroup files are read ("" for the real ones): the private
 * _default_thread_count(root) passes a fabricated tree, for tests.
 */
int
thread_count_for(const char *cgroup_root)
{
    long count = 1;
#ifdef _WIN32
    (void)cgroup_root;
    count = windows_cpu_count();
#elif defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        count = CPU_COUNT(&set);  /* the CPUs this process may run on */
    }
    else {
        count = sysconf(_SC_NPROCESSORS_ONLN);
    }
#else
    (void)cgroup_root;
    count = sysconf(_SC_NPROCESSORS_ONLN);
#endif
#ifdef __linux__
    long quota = cgroup_cpu_limit(cgroup_root);
    if (quota > 0 && quota < count) {
        count = quota;
    }
#endif
    if (count < 1) count = 1;
    if (count > LEAKY_MAX_THREADS) count = LEAKY_MAX_THREADS;
    return (int)count;
}

int
default_thread_count(void)
{
    return thread_count_for("");
}

void
pool_free(ThreadPool *pool)
{
    if (pool == NULL) {
        return;
    }
    if (pool->fork_count != process_fork_count()) {
        return;  /* a fork child's copy: no threads to join, the lock may be held */
    }
    if (!ATOMIC_CAS(&pool->busy, 0, 1)) {
        return;  /* a call still runs on it (a daemon thread at exit): leave it be */
    }
    ATOMIC_STORE(&pool->stop, 1);
    mutex_lock(&pool->lock);
    cond_broadcast(&pool->work);
    mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->nworkers; i++) {
#ifdef _WIN32
        WaitForSingleObject(pool->workers[i].thread, INFINITE);
        CloseHandle(pool->workers[i].thread);
#else
        pthread_join(pool->workers[i].thread, NULL);
#endif
    }
    mutex_destroy(&pool->lock);
    cond_destroy(&pool->work);
    cond_destroy(&pool->done);
    PyMem_RawFree(pool);
}

/* A pool with up to `nthreads - 1` workers; NULL if out of memory. */
static ThreadPool *
pool_new(int nthreads)
{
    assert(nthreads >= 1 && nthreads <= LEAKY_MAX_THREADS);
    if (!fork_hook_ready()) {
        return NULL;  /* could not tell an inherited pool from ours: run alone */
    }
    size_t nworkers = (size_t)(nthreads - 1);
    ThreadPool *pool = PyMem_RawCalloc(1, sizeof(ThreadPool) + nworkers * sizeof(Worker));
    if (pool == NULL) {
        return NULL;
    }
    pool->fork_count = process_fork_count();
    mutex_init(&pool->lock);
    cond_init(&pool->work);
    cond_init(&pool->done);
    for (int i = 0; i < (int)nworkers; i++) {
        Worker *worker = &pool->workers[i];
        worker->pool = pool;
        worker->index = i;
#ifdef _WIN32
        worker->thread = CreateThread(NULL, 0, worker_main, worker, 0, NULL);
        int failed = worker->thread == NULL;
#else
        int failed = pthread_create(&worker->thread, NULL, worker_main, worker) != 0;
#endif
        if (failed) {
            break;  /* fewer workers is fine: the caller takes their parts */
        }
        pool->nworkers++;
    }
    return pool;
}

/* Runs all parts of `job` on this thread and whichever of the first
   `helpers` workers join in (the protocol above). */
void
pool_run(ThreadPool *pool, const ParallelJob *job, int helpers)
{
    assert(ATOMIC_LOAD(&pool->busy) == 1);
    assert(job->nparts >= 1 && job->nparts <= TICKET_FIELD);
    assert(helpers >= 0 && helpers <= TICKET_FIELD);
    /* every part of the last job was counted done: nobody reads `job` now */
    long long last = ATOMIC_LOAD(&pool->ticket);
    assert(TICKET_NEXT(last) == TICKET_NPARTS(last));
    pool->job = *job;
    ATOMIC_STORE(&pool->done_parts, 0);
    ATOMIC_STORE(&pool->ticket, ticket_for(TICKET_GENERATION(last) + 1, helpers, job->nparts));
    mutex_lock(&pool->lock);
    if (pool->sleepers > 0) {
        cond_broadcast(&pool->work);
    }
    mutex_unlock(&pool->lock);
    pool_work_on(pool, -1, NULL);
    /* what is left are parts that workers are running right now */
    for (int round = 0; round < LEAKY_SPIN_ROUNDS; round++) {
        if (ATOMIC_LOAD(&pool->done_parts) == job->nparts) {
            return;
        }
        cpu_relax();
    }
    mutex_lock(&pool->lock);
    while (ATOMIC_LOAD(&pool->done_parts) < job->nparts) {
        cond_wait(&pool->done, &pool->lock);
    }
    mutex_unlock(&pool->lock);
}

/* This process's pool, made (or remade after a fork) on demand; NULL if busy. */
ThreadPool *
pool_for_caller(LeakyState *st)
{
    for (;;) {
        ThreadPool *pool = ATOMIC_LOAD_PTR(&st->pool);
        if (pool != NULL && pool->fork_count == process_fork_count()) {
            return ATOMIC_CAS(&pool->busy, 0, 1) ? pool : NULL;
        }
        /* none yet, or inherited through fork: the inherited one is left as it is */
        ThreadPool *fresh = pool_new(st->max_threads);
        if (fresh == NULL) {
            return NULL;
        }
        if (!ATOMIC_CAS_PTR(&st->pool, pool, fresh)) {
            pool_free(fresh);  /* another thread installed one first */
        }
    }
}

int
pool_thread_count(const ThreadPool *pool)
{
    return pool->nworkers + 1;
}

void
pool_release(ThreadPool *pool)
{
    ATOMIC_STORE(&pool->busy, 0);
}

/* Parts each worker has run, () before the pool exists or in a fork child. */
PyObject *
pool_worker_parts(ThreadPool *pool)
{
    if (pool == NULL || pool->fork_count != process_fork_count()) {
        return PyTuple_New(0);
    }
    PyObject *counts = PyTuple_New(pool->nworkers);
    for (int i = 0; counts != NULL && i < pool->nworkers; i++) {
        PyObject *count = PyLong_FromLongLong(ATOMIC_LOAD(&pool->workers[i].parts_run));
        if (count == NULL) {
            Py_CLEAR(counts);
            break;
        }
        PyTuple_SET_ITEM(counts, i, count);
    }
    return counts;
}
