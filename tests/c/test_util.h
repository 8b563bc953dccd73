/*
 * test_util.h - tiny helpers shared by the C test programs of tests/c/.
 *
 * Every program takes `host port [case]`, runs its cases (or only `case`), prints one line
 * per case and exits 0 only when every case passed. Events produced by callbacks (on the
 * loop thread) are counted under one mutex and waited for with a condition variable and a
 * deadline: no sleep is ever used as synchronisation.
 *
 * Include this file first: it sets _POSIX_C_SOURCE before the system headers.
 */
#ifndef MQTT_TEST_UTIL_H
#define MQTT_TEST_UTIL_H

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mqtt.h>

/* ---- configuration ----------------------------------------------------------------- */

static const char *t_host = "localhost";
static uint16_t t_port = 1883;
static int t_failures;
static int t_case_failed;
static const char *t_case_name = "";

/* ---- events -------------------------------------------------------------------------- */

static pthread_mutex_t t_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t t_changed = PTHREAD_COND_INITIALIZER;

static inline void t_deadline(struct timespec *deadline, int timeout_ms)
{
    clock_gettime(CLOCK_REALTIME, deadline);
    deadline->tv_sec += timeout_ms / 1000;
    deadline->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline->tv_nsec >= 1000000000L) {
        deadline->tv_sec++;
        deadline->tv_nsec -= 1000000000L;
    }
}

static inline void t_bump(int *counter)
{
    pthread_mutex_lock(&t_lock);
    (*counter)++;
    pthread_cond_broadcast(&t_changed);
    pthread_mutex_unlock(&t_lock);
}

static inline int t_get(const int *counter)
{
    int v;
    pthread_mutex_lock(&t_lock);
    v = *counter;
    pthread_mutex_unlock(&t_lock);
    return v;
}

/* Wake the waiters after changing shared state under t_lock. */
static inline void t_signal_locked(void)
{
    pthread_cond_broadcast(&t_changed);
}

/* Wait until *counter >= target; returns 0 on timeout. */
static inline int t_wait(const int *counter, int target, int timeout_ms)
{
    struct timespec deadline;
    int ok;

    t_deadline(&deadline, timeout_ms);
    pthread_mutex_lock(&t_lock);
    while (*counter < target)
        if (pthread_cond_timedwait(&t_changed, &t_lock, &deadline) == ETIMEDOUT)
            break;
    ok = *counter >= target;
    pthread_mutex_unlock(&t_lock);
    return ok;
}

/* Wait until pred(arg) is true (evaluated under t_lock); returns 0 on timeout. */
static inline int t_wait_pred(int (*pred)(void *), void *arg, int timeout_ms)
{
    struct timespec deadline;
    int ok;

    t_deadline(&deadline, timeout_ms);
    pthread_mutex_lock(&t_lock);
    while (!pred(arg))
        if (pthread_cond_timedwait(&t_changed, &t_lock, &deadline) == ETIMEDOUT)
            break;
    ok = pred(arg);
    pthread_mutex_unlock(&t_lock);
    return ok;
}

static inline double t_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- checks ------------------------------------------------------------------------ */

static inline void t_failf(int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "  FAIL %s (line %d): ", t_case_name, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    t_case_failed = 1;
}

/* Each case function has a `done:` label where it frees what it made. */
#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            t_failf(__LINE__, "%s", #cond);                                                \
            goto done;                                                                     \
        }                                                                                  \
    } while (0)

#define CHECK_EQ(a, b)                                                                     \
    do {                                                                                   \
        long t_a_ = (long)(a), t_b_ = (long)(b);                                           \
        if (t_a_ != t_b_) {                                                                \
            t_failf(__LINE__, "%s == %s (%ld != %ld)", #a, #b, t_a_, t_b_);                \
            goto done;                                                                     \
        }                                                                                  \
    } while (0)

/* An mqtt_* call that must return exactly `expected` (an mqtt_error). */
#define CHECK_RC(call, expected)                                                           \
    do {                                                                                   \
        int t_rc_ = (call);                                                                \
        if (t_rc_ != (expected)) {                                                         \
            t_failf(__LINE__, "%s returned %d (%s), expected %d (%s)", #call, t_rc_,        \
                    mqtt_strerror(t_rc_), (int)(expected), mqtt_strerror(expected));        \
            goto done;                                                                     \
        }                                                                                  \
    } while (0)

/* An mqtt_* call that must succeed (>= 0); the result is stored in `var`. */
#define CHECK_OK(var, call)                                                                \
    do {                                                                                   \
        (var) = (call);                                                                    \
        if ((var) < 0) {                                                                   \
            t_failf(__LINE__, "%s failed: %d (%s)", #call, (var), mqtt_strerror(var));     \
            goto done;                                                                     \
        }                                                                                  \
    } while (0)

typedef void (*t_case_fn)(void);

static inline void t_run(const char *name, t_case_fn fn, const char *only)
{
    double start;

    if (only != NULL && strcmp(only, name) != 0)
        return;
    t_case_name = name;
    t_case_failed = 0;
    start = t_now();
    fn();
    printf("[%s] %s (%.2fs)\n", t_case_failed ? "FAIL" : " OK ", name, t_now() - start);
    fflush(stdout);
    if (t_case_failed)
        t_failures++;
}

#define RUN(fn) t_run(#fn, fn, only)

/* Parse `host port [case]`; returns the case filter or NULL. */
static inline const char *t_init(int argc, char **argv)
{
    long port;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1)
        t_host = argv[1];
    if (argc > 2) {
        port = strtol(argv[2], NULL, 10);
        if (port <= 0 || port > 65535) {
            fprintf(stderr, "usage: %s [host] [port] [case]\n", argv[0]);
            exit(2);
        }
        t_port = (uint16_t)port;
    }
    return argc > 3 ? argv[3] : NULL;
}

static inline int t_finish(const char *program)
{
    if (t_failures)
        printf("%s: %d case(s) FAILED\n", program, t_failures);
    else
        printf("%s: all cases passed\n", program);
    return t_failures ? 1 : 0;
}

/* ---- clients and names --------------------------------------------------------------- */

/* A client id unique to this process and call. */
static inline mqtt_client *t_client(const char *name, bool clean_session)
{
    static int serial;
    char id[96];
    mqtt_client *client;

    snprintf(id, sizeof id, "t-%s-%ld-%d", name, (long)getpid(), ++serial);
    client = mqtt_client_new(id, clean_session);
    if (client != NULL)
        mqtt_client_set_connect_timeout(client, 5000);
    return client;
}

/* A topic unique to this process: test/<pid>/<case>/<suffix> */
static inline void t_topic(char *buf, size_t size, const char *suffix)
{
    snprintf(buf, size, "test/%ld/%s/%s", (long)getpid(), t_case_name, suffix);
}

static inline int t_connect(mqtt_client *client)
{
    return mqtt_client_connect(client, t_host, 30, t_port);
}

/* Subscribe and wait for the SUBACK through a SUBACK callback that the caller registered
 * with t_on_suback; returns the mid or a negative code (MQTT_ERR_TIMEOUT if no SUBACK). */
static int t_subacks;

static inline void t_on_suback(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    (void)data;
    (void)user_data;
    t_bump(&t_subacks);
}

static inline int t_subscribe_wait(mqtt_client *client, const char *filter, int qos)
{
    mqtt_subscription sub;
    int before = t_get(&t_subacks);
    int mid;

    sub.topic = filter;
    sub.qos = qos;
    mid = mqtt_client_subscribe(client, &sub, 1);
    if (mid < 0)
        return mid;
    if (!t_wait(&t_subacks, before + 1, 5000))
        return MQTT_ERR_TIMEOUT;
    return mid;
}

/* ---- recording messages ------------------------------------------------------------ */

#define T_MAX_RECORDS 64

struct t_record {
    int command;
    char topic[128];
    char payload[64];
    int qos;
    int mid;
    int has_message;
};

struct t_log {
    int count;
    struct t_record rec[T_MAX_RECORDS];
};

/* Append what a callback saw (under t_lock) and wake the waiters. */
static inline void t_log_add(struct t_log *log, const mqtt_data *data)
{
    struct t_record *r;
    size_t n;

    pthread_mutex_lock(&t_lock);
    if (log->count < T_MAX_RECORDS) {
        r = &log->rec[log->count];
        memset(r, 0, sizeof *r);
        r->command = (int)data->command;
        r->mid = data->mid;
        if (data->message != NULL) {
            r->has_message = 1;
            snprintf(r->topic, sizeof r->topic, "%s", data->message->topic);
            n = data->message->payload_len < sizeof r->payload - 1 ? data->message->payload_len
                                                                    : sizeof r->payload - 1;
            if (n > 0)
                memcpy(r->payload, data->message->payload, n);
            r->payload[n] = '\0';
            r->qos = data->message->qos;
        }
    }
    log->count++;
    t_signal_locked();
    pthread_mutex_unlock(&t_lock);
}

/* How many records of `log` have this payload (call after waiting; takes t_lock). */
static inline int t_log_count_payload(struct t_log *log, const char *payload)
{
    int i, n = 0;
    pthread_mutex_lock(&t_lock);
    for (i = 0; i < log->count && i < T_MAX_RECORDS; i++)
        if (log->rec[i].has_message && strcmp(log->rec[i].payload, payload) == 0)
            n++;
    pthread_mutex_unlock(&t_lock);
    return n;
}

/* A generic callback that records into the t_log passed as user_data. */
static inline void t_record_cb(mqtt_client *client, const mqtt_data *data, void *user_data)
{
    (void)client;
    t_log_add((struct t_log *)user_data, data);
}

#endif
