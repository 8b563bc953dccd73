/*
 * many_common.h - shared helpers of the many-clients benchmarks
 * (bench_many_libmqtt.c, bench_many_mosquitto.c, bench_many_paho.c).
 *
 *   bench_many_X idle HOST PORT CLIENTS KEEPALIVE IDLE_SECONDS
 *       connect CLIENTS clients (keepalive KEEPALIVE s), measure the time until
 *       all have their CONNACK, then stay idle IDLE_SECONDS and measure the
 *       process's CPU per second, its RSS and its threads.
 *   bench_many_X pub HOST PORT CLIENTS RATE SECONDS
 *       connect CLIENTS clients; each publishes QoS 1 to its own topic RATE
 *       times per second (starts spread over the first period) for SECONDS;
 *       CPU per message and publish -> PUBACK latency.
 *
 * Each prints one line "RESULT key=value ..." on stdout.
 */
#ifndef MANY_COMMON_H
#define MANY_COMMON_H

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct many_args {
    int pub; /* 0: idle, 1: pub */
    const char *host;
    int port;
    long clients;
    long keepalive; /* idle */
    double idle_s;  /* idle */
    long rate;      /* pub: messages per second per client */
    double pub_s;   /* pub */
};

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

/* A field of /proc/self/status in its unit (kB for VmRSS, a count for Threads). */
static inline long proc_status(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static inline void raise_fd_limit(long clients)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)clients * 2 + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = want;
    if (rl.rlim_max < want)
        rl.rlim_max = want; /* as root; otherwise the next call fails */
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static inline void many_parse(int argc, char **argv, struct many_args *a)
{
    if (argc != 7 || (strcmp(argv[1], "idle") && strcmp(argv[1], "pub"))) {
        fprintf(stderr, "usage: %s idle HOST PORT CLIENTS KEEPALIVE IDLE_SECONDS\n"
                        "       %s pub HOST PORT CLIENTS RATE SECONDS\n",
                argv[0], argv[0]);
        exit(2);
    }
    a->pub = !strcmp(argv[1], "pub");
    a->host = argv[2];
    a->port = atoi(argv[3]);
    a->clients = atol(argv[4]);
    if (a->pub) {
        a->keepalive = 60;
        a->rate = atol(argv[5]);
        a->pub_s = atof(argv[6]);
    } else {
        a->keepalive = atol(argv[5]);
        a->idle_s = atof(argv[6]);
    }
    if (a->clients < 1 || a->port < 1 || (a->pub && a->rate < 1)) {
        fprintf(stderr, "%s: bad arguments\n", argv[0]);
        exit(2);
    }
    raise_fd_limit(a->clients);
}

/* Writes one byte per page of the harness's own arrays so that they are resident
 * before rss_before is read: RSS per client must count the library, not the
 * harness (whose slots are the same size for every library). */
static inline void touch_pages(void *p, size_t len)
{
    volatile unsigned char *b = p;
    for (size_t i = 0; i < len; i += 4096)
        b[i] = 0;
    if (len)
        b[len - 1] = 0;
}

/* publish -> PUBACK latencies, microseconds */
static double *lat_us;
static size_t lat_len, lat_cap;

static inline void lat_add(double us)
{
    if (lat_len == lat_cap) {
        size_t cap = lat_cap ? lat_cap * 2 : 65536;
        double *p = realloc(lat_us, cap * sizeof *p);
        if (!p)
            return;
        lat_us = p;
        lat_cap = cap;
    }
    lat_us[lat_len++] = us;
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline double lat_pct(double p)
{
    if (!lat_len)
        return 0;
    return lat_us[(size_t)(p * (double)(lat_len - 1) + 0.5)];
}

/* The first half of the clients: the harness connects them, waits for all of
 * their CONNACKs and reads RSS (rss_half) before it starts the second half. */
static inline long first_half(const struct many_args *a)
{
    return a->clients / 2;
}

/* The idle report: connect time, threads, idle CPU, and RSS per client two
 * ways: growth from before the first client over all clients (it includes
 * one-time costs: the library's code pages, its global state, a reactor's
 * buffers), and growth from the first half to all (what one more client
 * costs). */
static inline void report_idle(const char *lib, const struct many_args *a, long connected, double connect_s,
                               long rss_before, long rss_half, long rss_after, double idle_cpu_s,
                               double idle_wall_s)
{
    long second_half = a->clients - first_half(a);
    printf("RESULT lib=%s mode=idle clients=%ld connected=%ld connect_s=%.3f connects_per_s=%.0f "
           "rss_before_kb=%ld rss_half_kb=%ld rss_kb=%ld kb_per_client=%.2f kb_per_added_client=%.2f threads=%ld "
           "idle_cpu_ms_per_s=%.3f ok=%d\n",
           lib, a->clients, connected, connect_s, connect_s > 0 ? (double)connected / connect_s : 0, rss_before,
           rss_half, rss_after, (double)(rss_after - rss_before) / (double)a->clients,
           second_half > 0 ? (double)(rss_after - rss_half) / (double)second_half : 0, proc_status("Threads"),
           idle_wall_s > 0 ? idle_cpu_s * 1000 / idle_wall_s : 0, connected == a->clients);
    fflush(stdout);
}

/* The pub report: CPU per acknowledged message and publish -> PUBACK latency. */
static inline void report_pub(const char *lib, const struct many_args *a, long connected, long sent, long acked,
                              double cpu, double wall)
{
    qsort(lat_us, lat_len, sizeof *lat_us, cmp_double);
    printf("RESULT lib=%s mode=pub clients=%ld connected=%ld sent=%ld acked=%ld msgs_per_s=%.0f cpu_us_per_msg=%.3f "
           "p50_us=%.0f p99_us=%.0f threads=%ld ok=%d\n",
           lib, a->clients, connected, sent, acked, wall > 0 ? (double)acked / wall : 0,
           acked ? cpu * 1e6 / (double)acked : 0, lat_pct(0.50), lat_pct(0.99), proc_status("Threads"),
           connected == a->clients && acked == sent && sent > 0);
    fflush(stdout);
}

#endif
