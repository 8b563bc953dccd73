/*
 * bench_common.h - shared helpers of the bench/ programs (header-only).
 *
 * Every program prints one line "RESULT key=value ..." on stdout; bench/run.sh
 * collects those lines. Times are CLOCK_MONOTONIC seconds (one clock for all
 * processes of the machine, so a publisher's start and a subscriber's last
 * arrival can be subtracted).
 *
 * Options from the environment (read by parse_args; a program that cannot do
 * one refuses it with exit status 2):
 *   BENCH_PAYLOAD=N        payload size in bytes (default 64, 8..1048576)
 *   BENCH_TLS_CA=FILE      connect with TLS to PORT, trusting the CA in FILE
 *                          (server authentication only; host name checked)
 *   BENCH_V5=1             speak MQTT 5 (publisher, subscriber, lat, idle)
 *   BENCH_USER_PROPERTY=1  MQTT 5 (implies BENCH_V5): every PUBLISH carries one
 *                          user property, BENCH_UP_KEY = BENCH_UP_VALUE; the
 *                          subscriber checks it on every message
 *   BENCH_TOPIC_ALIAS=1    MQTT 5 (implies BENCH_V5): the publisher uses a
 *                          topic alias (the topic once, then only the alias)
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

#define PAYLOAD_LEN 64 /* default payload size */
#define PAYLOAD_MIN 8
#define PAYLOAD_MAX (1 << 20)

/*
 * MQTT 5: the Receive Maximum every client announces (libmqtt's default, its
 * mqtt_client_set_max_incoming_qos2 limit; libmosquitto's default is 20). The
 * broker (mosquitto 2.0.11) takes a v5 subscriber's Receive Maximum as its
 * window to it, and exceeds it when it releases queued messages (up to 20 per
 * acknowledgement, eclipse-mosquitto/mosquitto#2301): a libmosquitto v5
 * subscriber announcing 20 then sees more than 20 QoS 1/2 messages in flight
 * and closes the connection (MOSQ_ERR_PROTOCOL), within a few hundred
 * messages at QoS 2. So both announce the same, larger value.
 */
#define V5_RECEIVE_MAX 1000

/* the user property of BENCH_USER_PROPERTY=1 */
#define BENCH_UP_KEY "bench-key"
#define BENCH_UP_VALUE "bench-value-0123456789"

/* payload size of this run (BENCH_PAYLOAD; parse_args sets it) */
static size_t payload_len = PAYLOAD_LEN;

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
static inline long vmhwm_kb(void);

static inline void pub_report(int ok, long sent, long acked, double t0, double t1,
                              struct usage since)
{
    struct usage u = usage_now();
    printf("RESULT role=pub ok=%d sent=%ld acked=%ld t_start=%.6f t_end=%.6f cpu=%.6f "
           "nvcsw=%ld nivcsw=%ld vmhwm_kb=%ld\n",
           ok, sent, acked, t0, t1, u.cpu - since.cpu, u.nvcsw - since.nvcsw,
           u.nivcsw - since.nivcsw, vmhwm_kb());
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

/*
 * payload_len bytes: the sequence number (little endian u32), filler, and the
 * sequence number again in the last 4 bytes (a truncated, shifted or mixed-up
 * payload then fails the check in tally_add).
 */
static inline void make_payload(unsigned char *p, uint32_t seq)
{
    memset(p, 'x', payload_len);
    memcpy(p, &seq, sizeof seq);
    memcpy(p + payload_len - sizeof seq, &seq, sizeof seq);
}

/* a buffer for make_payload */
static inline unsigned char *payload_buffer(void)
{
    unsigned char *p = malloc(payload_len);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static inline uint32_t payload_seq(const void *p)
{
    uint32_t seq;
    memcpy(&seq, p, sizeof seq);
    return seq;
}

/*
 * Which sequence numbers arrived: distinct, duplicates, bad (wrong length,
 * sequence number out of range or not the same at both ends, or - counted by
 * the caller with tally_bad - a missing or wrong user property or topic).
 */
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
    if (len != payload_len) {
        t->bad++;
        return t->distinct >= t->count;
    }
    seq = payload_seq(payload);
    if (seq >= (uint32_t)t->count ||
        payload_seq((const unsigned char *)payload + len - sizeof seq) != seq)
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

/* a message that arrived but is wrong (property, topic): counts as corrupt */
static inline void tally_bad(struct tally *t)
{
    t->bad++;
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
 * RESULT line of a handshake run: connect -> CONNACK times T[0..N) (seconds),
 * p50 and p99 in microseconds; CPU_CONNECT: process CPU time spent between the
 * connect calls and their CONNACKs, summed; CPU_CYCLE: process CPU time of the
 * whole loop (create the client, configure TLS, connect, CONNACK, disconnect,
 * free); both reported per connect, in microseconds.
 */
static inline int handshake_report(double *t, long n, long expected, double cpu_connect,
                                   double cpu_cycle)
{
    if (n < expected || n == 0) {
        printf("RESULT role=handshake ok=0 connects=%ld expected=%ld\n", n, expected);
        return 1;
    }
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    printf("RESULT role=handshake ok=1 connects=%ld expected=%ld p50_us=%.1f p99_us=%.1f "
           "cpu_us=%.1f cycle_cpu_us=%.1f\n",
           n, expected, t[(n - 1) * 50 / 100] * 1e6, t[(n - 1) * 99 / 100] * 1e6,
           cpu_connect / (double)n * 1e6, cpu_cycle / (double)n * 1e6);
    return 0;
}

/*
 * Common command line of bench_libmqtt, bench_mosquitto, bench_paho, bench_raw
 * (bench_raw: pub and sub only):
 *   PROG pub  HOST PORT TOPIC QOS COUNT WINDOW
 *   PROG sub  HOST PORT TOPIC QOS COUNT
 *   PROG lat  HOST PORT TOPIC QOS COUNT      (COUNT round trips after 100 warm-up ones)
 *   PROG idle HOST PORT TOPIC                (connect, subscribe, idle 1 s, report VmHWM)
 *   PROG handshake HOST PORT TOPIC COUNT     (COUNT times: new client, connect, CONNACK,
 *                                             disconnect, free; p50/p99 connect -> CONNACK)
 * and the environment options above.
 */
struct args {
    const char *mode, *host, *topic;
    int port, qos;
    long count, window;
    /* from the environment */
    const char *tls_ca; /* BENCH_TLS_CA, or NULL */
    int v5, user_property, topic_alias;
};

static inline int env_flag(const char *name)
{
    const char *e = getenv(name);
    return e != NULL && *e != '\0' && strcmp(e, "0") != 0;
}

static inline void parse_env(struct args *a)
{
    const char *e = getenv("BENCH_PAYLOAD");
    if (e != NULL && *e != '\0') {
        long n = atol(e);
        if (n < PAYLOAD_MIN || n > PAYLOAD_MAX) {
            fprintf(stderr, "BENCH_PAYLOAD=%s: must be %d..%d bytes\n", e, PAYLOAD_MIN,
                    PAYLOAD_MAX);
            exit(2);
        }
        payload_len = (size_t)n;
    }
    e = getenv("BENCH_TLS_CA");
    a->tls_ca = e != NULL && *e != '\0' ? e : NULL;
    a->user_property = env_flag("BENCH_USER_PROPERTY");
    a->topic_alias = env_flag("BENCH_TOPIC_ALIAS");
    a->v5 = env_flag("BENCH_V5") || a->user_property || a->topic_alias;
}

/* exit status 2 for the options a program cannot do */
static inline void refuse_options(const struct args *a, const char *prog, int can_tls,
                                  int can_v5, int can_payload)
{
    const char *what = NULL;
    if (a->tls_ca != NULL && !can_tls)
        what = "BENCH_TLS_CA";
    else if (a->v5 && !can_v5)
        what = "BENCH_V5 / BENCH_USER_PROPERTY / BENCH_TOPIC_ALIAS";
    else if (payload_len != PAYLOAD_LEN && !can_payload)
        what = "BENCH_PAYLOAD";
    if (what != NULL) {
        fprintf(stderr, "%s: %s not supported\n", prog, what);
        exit(2);
    }
}

static inline void parse_args(int argc, char **argv, struct args *a)
{
    memset(a, 0, sizeof *a);
    if (argc < 5)
        goto usage;
    a->mode = argv[1];
    a->host = argv[2];
    a->port = atoi(argv[3]);
    a->topic = argv[4];
    parse_env(a);
    if (strcmp(a->mode, "idle") == 0)
        return;
    if (strcmp(a->mode, "handshake") == 0) {
        if (argc < 6 || (a->count = atol(argv[5])) <= 0)
            goto usage;
        return;
    }
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
            "          lat HOST PORT TOPIC QOS COUNT | idle HOST PORT TOPIC |\n"
            "          handshake HOST PORT TOPIC COUNT\n"
            "environment: BENCH_PAYLOAD=N BENCH_TLS_CA=FILE BENCH_V5=1 BENCH_USER_PROPERTY=1 "
            "BENCH_TOPIC_ALIAS=1\n",
            argv[0]);
    exit(2);
}

#define LAT_WARMUP 100
#define HANDSHAKE_TIMEOUT_S 10.0
#define SUB_STALL_S 5.0 /* a subscriber gives up after this long without progress */

#endif
