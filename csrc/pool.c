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
 * just finished spins briefly on the job counter before it sleeps on a
 * condition variable, so back-to-back calls never pay a wake-up.
 *
 * - Fork: the pool remembers the pid that made it; a child sees another pid,
 *   abandons the inherited copy (its threads do not exist there) and makes
 *   a pool of its own.
 * - Many Python threads: one job at a time; a caller that finds the pool
 *   busy runs its kernel alone instead of waiting.
 * - Interpreter exit: module free stops and joins the workers.
 * Workers never touch Python objects or the GIL.
 */
#define LEAKY_SPIN_ROUNDS 20000

#ifdef _WIN32
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
#define current_pid() 0L
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
#define current_pid() ((long)getpid())
#endif

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__) && !defined(_MSC_VER)
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
 * Ownership: a caller owns the pool while `busy` is 1 (pool_for_caller's
 * compare-and-swap), so there is one job at a time; a caller that finds the
 * pool busy runs its loop alone.  pool_run publishes a job in this order:
 * `job`, `helpers`, `done_parts` = 0, `ticket` = (generation << 32) | 0,
 * and last `generation`, under the lock, waking any sleepers.
 *
 * Claiming: parts are claimed through the one ticket.  Whoever wins the
 * compare-and-swap from (g, i) to (g, i + 1) runs part i, so the caller
 * runs every part that no worker has picked up yet and never waits for a
 * thread that has not started: when the CPUs are busy with other threads
 * (another library's spinning pool, say) a call degrades to the serial
 * speed instead of waiting for a time slice.  A worker that wakes late
 * finds the ticket of a newer job, or none left, and touches nothing.
 *
 * threads=N means N: a worker joins a job only while its index is below
 * the job's `helpers` (without this check every awake worker would take
 * parts).  `helpers` is read after the new generation, which pool_run
 * publishes after it; a stale value can only come from a later job, whose
 * ticket then turns this worker away.
 *
 * Completion: each finished part adds one to `done_parts`; the caller
 * returns once that equals the job's part count, spinning briefly and then
 * sleeping on `done`, which the finisher of the last part broadcasts under
 * the lock (the caller checks under the same lock, so no wake-up is lost).
 *
 * Known hole, found by review and not yet closed: pool_run rewrites `job`
 * while the previous job's ticket is still installed, so a late worker that
 * loaded the old ticket can read the new job's `nparts`, win its
 * compare-and-swap on the old ticket's value, and run and count a part of
 * the new job while pool_run is still writing it.
 */
typedef struct {
    ThreadPool *pool;
    int index;  /* 0 .. nworkers-1: joins a job only if index < the job's helpers */
    long long parts_run;  /* for tests (_worker_parts): which workers did work */
} WorkerSlot;

struct ThreadPool {
    long long generation;  /* job number; workers wait for it to change */
    long long helpers;     /* workers the current job may use (threads= minus the caller) */
    long long ticket;      /* (generation << 32) | index of the next unclaimed part */
    long long done_parts;  /* parts of the current job finished */
    long long busy;        /* a caller owns the pool */
    long long stop;
    long long sleepers;    /* workers asleep on `work` (guarded by lock) */
    ParallelJob job;       /* valid while parts of it are unfinished */
    long pid;
    int nworkers;
    Mutex lock;
    Cond work;
    Cond done;
    ThreadHandle threads[LEAKY_MAX_THREADS];
    WorkerSlot slots[LEAKY_MAX_THREADS];
};

#define TICKET(generation, index) ((((generation) & 0x7fffffffLL) << 32) | (long long)(index))

/* Claims and runs parts of job `generation` until none is left; counts
   them in *parts_run (a worker's tally; NULL for the caller). */
static void
pool_work_on(ThreadPool *pool, long long generation, long long *parts_run)
{
    for (;;) {
        long long ticket = ATOMIC_LOAD(&pool->ticket);
        int index = (int)(ticket & 0xffffffffLL);
        if ((ticket >> 32) != (generation & 0x7fffffffLL) || index >= pool->job.nparts) {
            return;
        }
        if (!ATOMIC_CAS(&pool->ticket, ticket, ticket + 1)) {
            continue;
        }
        const int nparts = pool->job.nparts;  /* stable: our part is not done yet */
        run_part(&pool->job, index);
        if (parts_run != NULL) {
            ATOMIC_ADD(parts_run, 1);
        }
        if (ATOMIC_ADD(&pool->done_parts, 1) + 1 == nparts) {
            mutex_lock(&pool->lock);  /* pairs with the caller's check under the lock */
            cond_broadcast(&pool->done);
            mutex_unlock(&pool->lock);
        }
    }
}

/* Waits for a job newer than `seen`; returns its number, or -1 when told to stop. */
static long long
pool_wait_for_job(ThreadPool *pool, long long seen)
{
    for (int round = 0; round < LEAKY_SPIN_ROUNDS; round++) {
        if (ATOMIC_LOAD(&pool->stop)) {
            return -1;
        }
        long long generation = ATOMIC_LOAD(&pool->generation);
        if (generation != seen) {
            return generation;
        }
        cpu_relax();
    }
    mutex_lock(&pool->lock);
    pool->sleepers++;
    while (ATOMIC_LOAD(&pool->generation) == seen && !ATOMIC_LOAD(&pool->stop)) {
        cond_wait(&pool->work, &pool->lock);
    }
    pool->sleepers--;
    mutex_unlock(&pool->lock);
    return ATOMIC_LOAD(&pool->stop) ? -1 : ATOMIC_LOAD(&pool->generation);
}

#ifdef _WIN32
static DWORD WINAPI
worker_main(LPVOID arg)
#else
static void *
worker_main(void *arg)
#endif
{
    WorkerSlot *slot = (WorkerSlot *)arg;
    ThreadPool *pool = slot->pool;
    long long seen = 0;
    for (;;) {
        long long generation = pool_wait_for_job(pool, seen);
        if (generation < 0) {
            break;
        }
        seen = generation;
        /* threads=N means N (the protocol above) */
        if (slot->index < ATOMIC_LOAD(&pool->helpers)) {
            pool_work_on(pool, generation, &slot->parts_run);
        }
    }
#ifdef _WIN32
    return 0;
#else
    return NULL;
#endif
}

int
default_thread_count(void)
{
    long count = 1;
#ifdef _WIN32
    count = (long)GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
#elif defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        count = CPU_COUNT(&set);  /* the CPUs this process may run on */
    }
    else {
        count = sysconf(_SC_NPROCESSORS_ONLN);
    }
#else
    count = sysconf(_SC_NPROCESSORS_ONLN);
#endif
    if (count < 1) count = 1;
    if (count > LEAKY_MAX_THREADS) count = LEAKY_MAX_THREADS;
    return (int)count;
}

void
pool_free(ThreadPool *pool)
{
    if (pool == NULL) {
        return;
    }
    if (pool->pid != current_pid()) {
        return;  /* a fork child's copy: no threads to join, the lock may be held */
    }
    ATOMIC_STORE(&pool->stop, 1);
    mutex_lock(&pool->lock);
    cond_broadcast(&pool->work);
    mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->nworkers; i++) {
#ifdef _WIN32
        WaitForSingleObject(pool->threads[i], INFINITE);
        CloseHandle(pool->threads[i]);
#else
        pthread_join(pool->threads[i], NULL);
#endif
    }
    mutex_destroy(&pool->lock);
    cond_destroy(&pool->work);
    cond_destroy(&pool->done);
    PyMem_RawFree(pool);
}

/* A pool with `nthreads - 1` workers; NULL if out of memory. */
static ThreadPool *
pool_new(int nthreads)
{
    ThreadPool *pool = PyMem_RawCalloc(1, sizeof(ThreadPool));
    if (pool == NULL) {
        return NULL;
    }
    pool->pid = current_pid();
    mutex_init(&pool->lock);
    cond_init(&pool->work);
    cond_init(&pool->done);
    for (int i = 0; i < nthreads - 1; i++) {
        pool->slots[i].pool = pool;
        pool->slots[i].index = i;
#ifdef _WIN32
        pool->threads[i] = CreateThread(NULL, 0, worker_main, &pool->slots[i], 0, NULL);
        int failed = pool->threads[i] == NULL;
#else
        int failed = pthread_create(&pool->threads[i], NULL, worker_main, &pool->slots[i]) != 0;
#endif
        if (failed) {
            break;  /* fewer workers is fine: the caller takes their parts */
        }
        pool->nworkers++;
    }
    return pool;
}

/* Runs all parts of `job` on this thread and whichever of the first
   `helpers` workers join in. */
void
pool_run(ThreadPool *pool, const ParallelJob *job, int helpers)
{
    assert(ATOMIC_LOAD(&pool->busy) == 1 && job->nparts >= 1);
    long long generation = ATOMIC_LOAD(&pool->generation) + 1;
    pool->job = *job;
    ATOMIC_STORE(&pool->helpers, (long long)helpers);
    ATOMIC_STORE(&pool->done_parts, 0);
    ATOMIC_STORE(&pool->ticket, TICKET(generation, 0));
    mutex_lock(&pool->lock);
    ATOMIC_STORE(&pool->generation, generation);
    if (pool->sleepers > 0) {
        cond_broadcast(&pool->work);
    }
    mutex_unlock(&pool->lock);
    pool_work_on(pool, generation, NULL);
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
        if (pool != NULL && pool->pid == current_pid()) {
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
    if (pool == NULL || pool->pid != current_pid()) {
        return PyTuple_New(0);
    }
    PyObject *counts = PyTuple_New(pool->nworkers);
    for (int i = 0; counts != NULL && i < pool->nworkers; i++) {
        PyObject *count = PyLong_FromLongLong(ATOMIC_LOAD(&pool->slots[i].parts_run));
        if (count == NULL) {
            Py_CLEAR(counts);
            break;
        }
        PyTuple_SET_ITEM(counts, i, count);
    }
    return counts;
}
