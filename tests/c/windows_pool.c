/*
 * leaky's Windows-only code on Windows' own APIs (under Wine in CI: see
 * .ci/wine.sh), built with mingw-w64 from the shipped csrc/ files, with a
 * stand-in python313.dll for the few C-API calls they import
 * (tests/c/python_stub.c):
 *
 * 1. The pool: Win32 threads (CreateThread), SRW locks and condition
 *    variables, the Interlocked/acquire-release atomics of the ticket
 *    protocol, driven through the real driver (run_elementwise), so every
 *    call splits (thresholds 0):
 *    - 8 Win32 caller threads, released together by one manual-reset
 *      event, each making 400 calls on its own arrays (random lengths,
 *      threads=, slopes and kernel tables) while the others do, so callers
 *      meet a busy pool and run alone; every result checked against the
 *      leaky ReLU written out here;
 *    - one caller making 20,000 small jobs back to back (12,288 elements in
 *      3 parts of 4,096): the workers' spin, claim and sleep paths in quick
 *      succession, every 16th result checked;
 *    - the workers ran parts (pool_worker_parts), the driver paired each
 *      Py_BEGIN_ALLOW_THREADS with its END;
 *    - shutdown: pool_free leaves a pool a caller still holds, and joins
 *      the workers of a free one (WaitForSingleObject on each), within a
 *      watchdog's 20 s.
 * 2. The CPU count (pool.c's windows_cpu_count, through thread_count_for):
 *    - no affinity set: every CPU (GetSystemInfo's count; one processor
 *      group here);
 *    - after SetProcessAffinityMask(1): 1;
 *    - in a job object with a hard CPU-rate cap of 50%: half the CPUs,
 *      rounded up; where Wine does not report the cap back through
 *      QueryInformationJobObject, the line says so and the count must be
 *      the uncapped one.
 *
 * Exit status 1 on any failure.  Arguments: none.
 */
#include "leaky.h"

#include <stdio.h>
#include <windows.h>

#include "python_stub.h"

static int failures;

#define CHECK(cond, ...)                          \
    do {                                          \
        if (!(cond)) {                            \
            failures++;                           \
            printf("FAILED: " __VA_ARGS__);       \
            printf("\n");                         \
        }                                         \
    } while (0)

static const KernelTable *tables[4];
static int ntables;

/* xorshift64, per thread */
static uint64_t
next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

/* The leaky ReLU of one float64, as leaky.h's rule says for ordinary
   (non-NaN) inputs and slopes: z > 0 keeps z, otherwise z * alpha. */
static double
leaky_relu_of(double z, double alpha)
{
    return z > 0 ? z : z * alpha;
}

static void
operand_1d(Operand *op, double *data, Py_ssize_t n)
{
    memset(op, 0, sizeof *op);
    op->view.buf = data;
    op->view.ndim = 1;
    op->view.itemsize = sizeof(double);
    op->kind = KIND_F64;
    op->shape[0] = n;
    op->strides[0] = sizeof(double);
}

/* One forward call through the driver: returns the wrong elements. */
static long
forward_call(LeakyState *st, const KernelTable *table, const double *x, double *out,
             Py_ssize_t n, double alpha, int threads)
{
    Operand in, result;
    operand_1d(&in, (double *)x, n);
    operand_1d(&result, out, n);
    Operand *ops[2] = {&in, &result};
    LoopContext ctx = loop_context_for(alpha);
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = -12345.0;
    }
    if (run_elementwise(st, ops, 2, table->forward[KIND_F64], &ctx, threads, ORDER_ANY) != 0) {
        return n + 1;
    }
    long wrong = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        wrong += memcmp(&out[i], &(double){leaky_relu_of(x[i], alpha)}, sizeof(double)) != 0;
    }
    return wrong;
}

/* ---- many callers at once ---- */

enum { CALLERS = 8, CALLS_PER_CALLER = 400, MAX_N = 50000 };

typedef struct {
    LeakyState *st;
    HANDLE go;
    int seed;
    long calls;
    long wrong;
} Caller;

static DWORD WINAPI
caller_main(LPVOID arg)
{
    Caller *self = arg;
    uint64_t state = 0x9e3779b97f4a7c15ull * (uint64_t)(self->seed + 1);
    double *x = malloc(MAX_N * sizeof(double)), *out = malloc(MAX_N * sizeof(double));
    if (x == NULL || out == NULL) {
        self->wrong = -1;
        return 0;
    }
    for (int i = 0; i < MAX_N; i++) {
        x[i] = (double)(int64_t)(next_random(&state) % 2001) / 7.0 - 140.0;
    }
    static const int threads_choices[] = {0, 2, 3, 8};
    static const double alphas[] = {0.01, 0.3, 1.5, -0.5};
    WaitForSingleObject(self->go, INFINITE);
    for (int call = 0; call < CALLS_PER_CALLER; call++) {
        Py_ssize_t n = 1 + (Py_ssize_t)(next_random(&state) % MAX_N);
        int threads = threads_choices[next_random(&state) % 4];
        double alpha = alphas[next_random(&state) % 4];
        const KernelTable *table = tables[next_random(&state) % (uint64_t)ntables];
        self->wrong += forward_call(self->st, table, x, out, n, alpha, threads);
        self->calls++;
    }
    free(x);
    free(out);
    return 0;
}

static long long
worker_parts(LeakyState *st, long long *nworkers)
{
    StubTuple *parts = (StubTuple *)pool_worker_parts(st->pool);
    long long sum = 0;
    *nworkers = parts->size;
    for (long long i = 0; i < parts->size; i++) {
        sum += ((StubInt *)parts->items[i])->value;
        free(parts->items[i]);
    }
    free(parts);
    return sum;
}

static DWORD WINAPI
free_pool(LPVOID arg)
{
    pool_free(arg);
    return 0;
}

static void
check_pool(void)
{
    static PyTypeObject tuple_type;  /* only its flags are read (PyTuple_Check) */
    tuple_type.tp_flags = Py_TPFLAGS_TUPLE_SUBCLASS;
    stub_set_tuple_type(&tuple_type);

    LeakyState st;
    memset(&st, 0, sizeof st);
    st.max_threads = 8;  /* a pool of 8 whatever the CPUs, as the suite's stress tests */
    st.tuning.gil_threshold = 0;
    st.tuning.parallel_threshold = 0;  /* every call splits */
    st.tuning.stream_bytes = LEAKY_STREAM_BYTES;

    Caller callers[CALLERS];
    HANDLE threads[CALLERS];
    HANDLE go = CreateEventW(NULL, TRUE, FALSE, NULL);  /* manual reset: releases them all */
    CHECK(go != NULL, "CreateEvent: %lu", GetLastError());
    for (int i = 0; i < CALLERS; i++) {
        callers[i] = (Caller){.st = &st, .go = go, .seed = i};
        threads[i] = CreateThread(NULL, 0, caller_main, &callers[i], 0, NULL);
        CHECK(threads[i] != NULL, "CreateThread: %lu", GetLastError());
    }
    SetEvent(go);
    DWORD waited = WaitForMultipleObjects(CALLERS, threads, TRUE, 600000);
    CHECK(waited < WAIT_OBJECT_0 + CALLERS, "the callers did not finish in 600 s");
    long calls = 0, wrong = 0;
    for (int i = 0; i < CALLERS; i++) {
        CloseHandle(threads[i]);
        calls += callers[i].calls;
        wrong += callers[i].wrong;
    }
    CloseHandle(go);
    printf("pool: %d Win32 callers at once, %ld calls on %d kernel table(s), %ld wrong elements\n",
           CALLERS, calls, ntables, wrong);
    CHECK(calls == CALLERS * CALLS_PER_CALLER && wrong == 0, "wrong results under many callers");

    /* many small jobs from one caller: 3 parts each */
    enum { SMALL = 3 * 4096, JOBS = 20000 };
    double *x = malloc(SMALL * sizeof(double)), *out = malloc(SMALL * sizeof(double));
    uint64_t state = 42;
    for (int i = 0; i < SMALL; i++) {
        x[i] = (double)(int64_t)(next_random(&state) % 2001) / 3.0 - 300.0;
    }
    long small_wrong = 0, checked = 0;
    DWORD started = GetTickCount();
    for (int job = 0; job < JOBS; job++) {
        Operand in, result;
        operand_1d(&in, x, SMALL);
        operand_1d(&result, out, SMALL);
        Operand *ops[2] = {&in, &result};
        LoopContext ctx = loop_context_for(job % 2 ? 0.25 : 3.0);
        if (job % 16 == 0) {
            memset(out, 0, SMALL * sizeof(double));
        }
        run_elementwise(&st, ops, 2, tables[job % ntables]->forward[KIND_F64], &ctx, 3, ORDER_ANY);
        if (job % 16 == 0) {
            checked++;
            for (int i = 0; i < SMALL; i++) {
                small_wrong += out[i] != leaky_relu_of(x[i], ctx.alpha);
            }
        }
    }
    printf("pool: %d jobs of 3 parts back to back in %lu ms, %ld checked, %ld wrong elements\n",
           JOBS, (unsigned long)(GetTickCount() - started), checked, small_wrong);
    CHECK(small_wrong == 0, "wrong results in the small jobs");
    free(x);
    free(out);

    CHECK(st.pool != NULL, "no pool was made");
    if (st.pool == NULL) {
        return;
    }
    long long nworkers = 0, parts = worker_parts(&st, &nworkers);
    printf("pool: %lld workers ran %lld parts\n", nworkers, parts);
    CHECK(nworkers == 7, "a pool of 8 has %lld workers, not 7", nworkers);
    CHECK(parts > 0, "no worker ran a part: the caller did everything");
    long saves, restores, errors;
    stub_counts(&saves, &restores, &errors);
    printf("pool: the GIL released %ld times, taken back %ld times, %ld exceptions\n", saves,
           restores, errors);
    CHECK(saves == restores && saves >= calls && errors == 0,
          "Py_BEGIN/END_ALLOW_THREADS unpaired, or an exception");

    /* shutdown: a held pool is left alone, a free one is stopped and joined */
    ThreadPool *held = pool_for_caller(&st);
    CHECK(held == st.pool, "pool_for_caller did not hand out the idle pool");
    pool_free(held);  /* a caller holds it: must return at once, the pool intact */
    pool_release(held);
    long long after = worker_parts(&st, &nworkers);
    CHECK(nworkers == 7 && after == parts, "pool_free stopped a pool a caller held");
    HANDLE stopper = CreateThread(NULL, 0, free_pool, st.pool, 0, NULL);
    DWORD stopped = WaitForSingleObject(stopper, 20000);
    printf("pool: shutdown %s\n", stopped == WAIT_OBJECT_0 ? "joined every worker" : "HUNG");
    CHECK(stopped == WAIT_OBJECT_0, "pool_free did not join the workers in 20 s");
    CloseHandle(stopper);
}

/* ---- the CPU count ---- */

static void
check_cpu_count(void)
{
    SYSTEM_INFO info;
    GetSystemInfo(&info);
    const long cpus = (long)info.dwNumberOfProcessors;
    const int groups = GetActiveProcessorGroupCount();
    USHORT group_list[8];
    USHORT ngroups = 8;
    BOOL have_groups = GetProcessGroupAffinity(GetCurrentProcess(), &ngroups, group_list);
    if (have_groups) {
        printf("cpu count: %ld CPUs (GetSystemInfo), %d processor group(s), the process in %u\n",
               cpus, groups, (unsigned)ngroups);
    }
    else {
        printf("cpu count: %ld CPUs (GetSystemInfo), %d processor group(s); "
               "GetProcessGroupAffinity fails here (error %lu): pool.c reads the affinity mask\n",
               cpus, groups, GetLastError());
    }
    int count = thread_count_for("");
    printf("cpu count: no affinity set: %d\n", count);
    CHECK(count == cpus, "thread_count_for gives %d, the process may use %ld", count, cpus);

    DWORD_PTR process_mask = 0, system_mask = 0;
    GetProcessAffinityMask(GetCurrentProcess(), &process_mask, &system_mask);
    if (SetProcessAffinityMask(GetCurrentProcess(), 1)) {
        DWORD_PTR now = 0;
        GetProcessAffinityMask(GetCurrentProcess(), &now, &system_mask);
        count = thread_count_for("");
        printf("cpu count: affinity mask 0x1 (reads back 0x%llx): %d\n", (unsigned long long)now,
               count);
        CHECK(count == 1, "affinity 0x1: thread_count_for gives %d, not 1", count);
        SetProcessAffinityMask(GetCurrentProcess(), process_mask);
        count = thread_count_for("");
        CHECK(count == cpus, "affinity restored: %d, not %ld", count, cpus);
    }
    else {
        printf("cpu count: SetProcessAffinityMask is not implemented here (error %lu)\n",
               GetLastError());
    }

    HANDLE job = CreateJobObjectW(NULL, NULL);
    JOBOBJECT_CPU_RATE_CONTROL_INFORMATION rate;
    memset(&rate, 0, sizeof rate);
    rate.ControlFlags = JOB_OBJECT_CPU_RATE_CONTROL_ENABLE | JOB_OBJECT_CPU_RATE_CONTROL_HARD_CAP;
    rate.CpuRate = 5000;  /* 50.00% of the machine */
    BOOL set = job != NULL &&
               SetInformationJobObject(job, JobObjectCpuRateControlInformation, &rate, sizeof rate);
    DWORD set_error = set ? 0 : GetLastError();
    BOOL assigned = set && AssignProcessToJobObject(job, GetCurrentProcess());
    JOBOBJECT_CPU_RATE_CONTROL_INFORMATION seen;
    memset(&seen, 0, sizeof seen);
    BOOL queried = assigned && QueryInformationJobObject(NULL, JobObjectCpuRateControlInformation,
                                                         &seen, sizeof seen, NULL);
    count = thread_count_for("");
    if (queried && (seen.ControlFlags & JOB_OBJECT_CPU_RATE_CONTROL_ENABLE) && seen.CpuRate == 5000) {
        long expected = (cpus + 1) / 2;
        printf("cpu count: in a job capped at 50%%: %d\n", count);
        CHECK(count == expected, "a 50%% cap on %ld CPUs: %d, not %ld", cpus, count, expected);
    }
    else {
        printf("cpu count: no job object CPU-rate cap here (SetInformationJobObject error %lu, "
               "assigned %s, read back %s): count %d, uncapped\n",
               set_error, assigned ? "yes" : "no", queried ? "without the cap" : "no", count);
        CHECK(count == cpus, "no cap visible, yet the count is %d, not %ld", count, cpus);
    }
}

int
main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    ntables = supported_kernels(tables);
    printf("kernel tables:");
    for (int t = 0; t < ntables; t++) {
        printf(" %s", tables[t]->name);
    }
    printf("\n");
    check_pool();
    check_cpu_count();
    printf("%s\n", failures ? "windows_pool: FAILED" : "windows_pool: all checks passed");
    return failures != 0;
}
