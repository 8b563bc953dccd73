/*
 * bench_common.h - shared helpers of the bench/ programs (header-only).
 *
 * Every program prints one line "RESULT key=value ..." on stdout; bench/run.sh
 * collects those lines. Times are CLOCK_MONOTONIC seconds (one clock for all
 * processes of the machine, so a publisher's start and a subscriber's last
 * arrival can be subtracted).
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD_LEN 64

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * CPU time and context switches of the whole process (all its threads, also the
 * ones that already ended). A voluntary switch is the process giving up its CPU
 * because it blocks (epoll_wait, poll, read, a condition variable, ...): on this
 * kind of machine the cost of one message is mostly such sleep/wake cycles and the
 * TCP stack, so the number of them per message is reported next to the CPU time.
 */
struct usage {
    double cpu;  /* user + sys seconds */
    long nvcsw;  /* voluntary context switches (wake-ups) */
    long nivcsw; /* involuntary context switches (preemptions) */
};

static inline struct usage usage_now(void)
{
    struct rusage ru;
    struct usage u;
    getrusage(RUSAGE_SELF, &ru);
    u.cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
            (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    u.nvcsw = ru.ru_nvcsw;
    u.nivcsw = ru.ru_nivcsw;
    return u;
}

/*
 * RESULT line of a publisher; cpu, nvcsw and nivcsw count from SINCE (taken just
 * before the first publish) to now. T0, T1: first publish, last completion.
 */
static inline void pub_report(int ok, long sent, long acked, double t0, double t1,
                              struct usage since)
{
    struct usage u = usage_now();
    printf("RESULT role=pub ok=%d sent=%ld acked=%ld t_start=%.6f t_end=%.6f cpu=%.6f "
           "nvcsw=%ld nivcsw=%ld\n",
           ok, sent, acked, t0, t1, u.cpu - since.cpu, u.nvcsw - since.nvcsw,
           u.nivcsw - since.nivcsw);
    fflush(stdout);
}

/* peak resident set size (VmHWM) in kB, -1 if unknown */
static inline long vmhwm_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* 64-byte payload: sequence number (little endian u32) then filler */
static inline void make_payload(unsigned char *p, uint32_t seq)
{
    memset(p, 'x', PAYLOAD_LEN);
    memcpy(p, &seq, sizeof seq);
}

static inline uint32_t payload_seq(const void *p)
{
    uint32_t seq;
    memcpy(&seq, p, sizeof seq);
    return seq;
}

/* Which sequence numbers arrived: distinct, duplicates, out of range, bad length. */
struct tally {
    unsigned char *seen;
    long count;     /* expected */
    long distinct;
    long dups;
    long bad;
    double t_first, t_last;
};

static inline void tally_init(struct tally *t, long count)
{
    memset(t, 0, sizeof *t);
    t->count = count;
    t->seen = calloc((size_t)count + 1, 1);
    if (t->seen == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
}

/* returns 1 when every expected message has arrived */
static inline int tally_add(struct tally *t, const void *payload, size_t len)
{
    uint32_t seq;
    double now = now_s();
    if (len != PAYLOAD_LEN) {
        t->bad++;
        return t->distinct >= t->count;
    }
    seq = payload_seq(payload);
    if (seq >= (uint32_t)t->count)
        t->bad++;
    else if (t->seen[seq])
        t->dups++;
    else {
        t->seen[seq] = 1;
        if (t->distinct++ == 0)
            t->t_first = now;
        t->t_last = now;
    }
    return t->distinct >= t->count;
}

/*
 * RESULT line of a subscriber; cpu, nvcsw and nivcsw count from SINCE (taken when
 * it said "ready") to now. Exit status 0 only when all arrived exactly once.
 */
static inline int tally_report(const struct tally *t, struct usage since)
{
    struct usage u = usage_now();
    int ok = t->distinct == t->count && t->bad == 0 && t->dups == 0;
    long first_missing = -1, i;
    for (i = 0; i < t->count && first_missing < 0; i++)
        if (!t->seen[i])
            first_missing = i;
    printf("RESULT role=sub ok=%d received=%ld expected=%ld dups=%ld bad=%ld first_missing=%ld "
           "t_first=%.6f t_last=%.6f cpu=%.6f nvcsw=%ld nivcsw=%ld\n",
           ok, t->distinct, t->count, t->dups, t->bad, first_missing, t->t_first, t->t_last,
           u.cpu - since.cpu, u.nvcsw - since.nvcsw, u.nivcsw - since.nivcsw);
    fflush(stdout);
    return ok ? 0 : 1;
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* RESULT line of a latency run: p50 and p99 of the round trips, in microseconds */
static inline int latency_report(double *rtt, long n, long expected)
{
    double p50, p99;
    if (n < expected || n == 0) {
        printf("RESULT role=lat ok=0 received=%ld expected=%ld\n", n, expected);
        return 1;
    }
    qsort(rtt, (size_t)n, sizeof *rtt, cmp_double);
    p50 = rtt[(n - 1) * 50 / 100];
    p99 = rtt[(n - 1) * 99 / 100];
    printf("RESULT role=lat ok=1 received=%ld expected=%ld p50_us=%.1f p99_us=%.1f\n", n,
           expected, p50 * 1e6, p99 * 1e6);
    return 0;
}

/*
 * Common command line of bench_libmqtt, bench_mosquitto, bench_paho, bench_raw
 * (bench_raw: pub and sub only):
 *   PROG pub  HOST PORT TOPIC QOS COUNT WINDOW
 *   PROG sub  HOST PORT TOPIC QOS COUNT
 *   PROG lat  HOST PORT TOPIC QOS COUNT      (COUNT round trips after 100 warm-up ones)
 *   PROG idle HOST PORT TOPIC                (connect, subscribe, idle 1 s, report VmHWM)
 */
struct args {
    const char *mode, *host, *topic;
    int port, qos;
    long count, window;
};

static inline void parse_args(int argc, char **argv, struct args *a)
{
    memset(a, 0, sizeof *a);
    if (argc < 5)
        goto usage;
    a->mode = argv[1];
    a->host = argv[2];
    a->port = atoi(argv[3]);
    a->topic = argv[4];
    if (strcmp(a->mode, "idle") == 0)
        return;
    if (argc < 7)
        goto usage;
    a->qos = atoi(argv[5]);
    a->count = atol(argv[6]);
    if (strcmp(a->mode, "pub") == 0) {
        if (argc < 8)
            goto usage;
        a->window = atol(argv[7]);
    } else if (strcmp(a->mode, "sub") != 0 && strcmp(a->mode, "lat") != 0)
        goto usage;
    if (a->qos < 0 || a->qos > 2 || a->count <= 0 || (a->window <= 0 && a->mode[0] == 'p'))
        goto usage;
    return;
usage:
    fprintf(stderr,
            "usage: %s pub HOST PORT TOPIC QOS COUNT WINDOW | sub HOST PORT TOPIC QOS COUNT |\n"
            "          lat HOST PORT TOPIC QOS COUNT | idle HOST PORT TOPIC\n",
            argv[0]);
    exit(2);
}

#define LAT_WARMUP 100
#define SUB_STALL_S 5.0 /* a subscriber gives up after this long without progress */

#endif
