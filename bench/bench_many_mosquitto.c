/*
 * bench_many_mosquitto.c - many libmosquitto clients in one process, driven by
 * one poll() loop over mosquitto_socket() of every client (libmosquitto has no
 * multi-client loop: this is what its documentation leaves to the application).
 * With BENCH_MOSQ_LOOP_START=1 in the environment (idle mode only), each client
 * runs on its own mosquitto_loop_start() thread instead, reported as
 * lib=mosquitto-threads; a client whose thread cannot start fails the run, and
 * a wait for CONNACKs ends after 5 s without a new one (see wait_connacks),
 * with ok=0 and the count that connected.
 * See many_common.h for the command line and the output.
 */
#include "many_common.h"

#include <mosquitto.h>
#include <poll.h>

#define SLOTS 64

struct slot {
    struct mosquitto *m;
    int connected;
    char topic[32];
    double next;
    int mid_at[SLOTS];
    double sent_at[SLOTS];
};

static long connected, acked, sent;
/* Each client on its own loop_start thread: callbacks run there. */
static int threaded;

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
    struct slot *s = ud;
    (void)m;
    if (rc == 0 && !s->connected) {
        s->connected = 1;
        __atomic_add_fetch(&connected, 1, __ATOMIC_SEQ_CST);
    }
}

static long connected_now(void)
{
    return __atomic_load_n(&connected, __ATOMIC_SEQ_CST);
}

static void on_publish(struct mosquitto *m, void *ud, int mid)
{
    struct slot *s = ud;
    (void)m;
    acked++;
    if (s->mid_at[mid % SLOTS] == mid) {
        lat_add((now_s() - s->sent_at[mid % SLOTS]) * 1e6);
        s->mid_at[mid % SLOTS] = 0;
    }
}

static struct pollfd *fds;
static double next_misc;

static void turn(struct slot *s, long n, int timeout_ms)
{
    if (threaded) { /* the clients' own threads do the work: just wait */
        usleep((useconds_t)timeout_ms * 1000);
        return;
    }
    for (long i = 0; i < n; i++) {
        fds[i].fd = mosquitto_socket(s[i].m);
        fds[i].events = POLLIN | (mosquitto_want_write(s[i].m) ? POLLOUT : 0);
        fds[i].revents = 0;
    }
    if (poll(fds, (nfds_t)n, timeout_ms) > 0)
        for (long i = 0; i < n; i++) {
            if (fds[i].revents & (POLLIN | POLLERR | POLLHUP))
                mosquitto_loop_read(s[i].m, 1);
            if (fds[i].revents & POLLOUT)
                mosquitto_loop_write(s[i].m, 1);
        }
    if (now_s() >= next_misc) {
        for (long i = 0; i < n; i++)
            mosquitto_loop_misc(s[i].m);
        next_misc = now_s() + 1;
    }
}

/* Run until `target` clients of the first `created` have their CONNACK, or
 * until `deadline`. A loop_start thread that gave up never connects its
 * client, so with threads the wait also ends after 5 s without a new one. */
static void wait_connacks(struct slot *s, long created, long target, double deadline)
{
    long seen = connected_now();
    double since = now_s();
    while (connected_now() < target && now_s() < deadline) {
        if (connected_now() != seen) {
            seen = connected_now();
            since = now_s();
        } else if (threaded && now_s() - since >= 5) {
            return;
        }
        turn(s, created, threaded ? 1 : 100);
    }
}

int main(int argc, char **argv)
{
    struct many_args a = {0};
    many_parse(argc, argv, &a);
    const char *ls = getenv("BENCH_MOSQ_LOOP_START");
    threaded = ls && *ls && strcmp(ls, "0");
    if (threaded && a.pub) {
        fprintf(stderr, "bench_many_mosquitto: BENCH_MOSQ_LOOP_START is for idle mode only\n");
        return 2;
    }
    const char *lib = threaded ? "mosquitto-threads" : "mosquitto";
    mosquitto_lib_init();
    long n = a.clients;
    struct slot *s = calloc((size_t)n, sizeof *s);
    fds = calloc((size_t)n, sizeof *fds);
    if (!s || !fds)
        return 1;
    touch_pages(s, (size_t)n * sizeof *s);
    touch_pages(fds, (size_t)n * sizeof *fds);
    long rss_before = proc_status("VmRSS");
    double t0 = now_s();
    long half = first_half(&a), rss_half = 0;
    for (long i = 0; i < n; i++) {
        if (i == half && !a.pub) {
            wait_connacks(s, i, half, t0 + 120);
            rss_half = proc_status("VmRSS");
        }
        char id[48];
        snprintf(id, sizeof id, "many-mosq-%ld-%ld", (long)getpid(), i);
        snprintf(s[i].topic, sizeof s[i].topic, "many/%ld", i);
        s[i].m = mosquitto_new(id, true, &s[i]);
        if (!s[i].m)
            return 1;
        mosquitto_connect_callback_set(s[i].m, on_connect);
        mosquitto_publish_callback_set(s[i].m, on_publish);
        /* mosquitto.h: connect_async may come before or after loop_start */
        if (threaded && mosquitto_loop_start(s[i].m) != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "bench_many_mosquitto: loop_start failed at client %ld (%ld threads)\n", i,
                    proc_status("Threads"));
            return 1;
        }
        if (mosquitto_connect_async(s[i].m, a.host, a.port, (int)a.keepalive) != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "bench_many_mosquitto: connect %ld failed\n", i);
            return 1;
        }
    }
    wait_connacks(s, n, n, t0 + 120);
    double connect_s = now_s() - t0;

    if (!a.pub) {
        double c0 = cpu_s(), w0 = now_s();
        while (now_s() - w0 < a.idle_s)
            turn(s, n, 1000);
        report_idle(lib, &a, connected_now(), connect_s, rss_before, rss_half, proc_status("VmRSS"), cpu_s() - c0,
                    now_s() - w0);
    } else {
        double period = 1.0 / (double)a.rate;
        double w0 = now_s(), c0 = cpu_s();
        for (long i = 0; i < n; i++)
            s[i].next = w0 + period * (double)i / (double)n;
        unsigned char payload[64] = {0};
        while (now_s() - w0 < a.pub_s) {
            double t = now_s(), due = t + 1;
            for (long i = 0; i < n; i++) {
                if (s[i].next <= t) {
                    int mid = 0;
                    if (mosquitto_publish(s[i].m, &mid, s[i].topic, sizeof payload, payload, 1, false) ==
                        MOSQ_ERR_SUCCESS) {
                        sent++;
                        s[i].mid_at[mid % SLOTS] = mid;
                        s[i].sent_at[mid % SLOTS] = t;
                    }
                    s[i].next += period;
                }
                if (s[i].next < due)
                    due = s[i].next;
            }
            int wait = (int)((due - now_s()) * 1000 + 0.999); /* never spin */
            turn(s, n, wait < 0 ? 0 : wait);
        }
        double drain = now_s() + 10;
        while (acked < sent && now_s() < drain)
            turn(s, n, 10);
        report_pub("mosquitto", &a, connected, sent, acked, cpu_s() - c0, now_s() - w0);
    }
    for (long i = 0; i < n; i++)
        mosquitto_disconnect(s[i].m);
    for (int k = 0; k < 5; k++)
        turn(s, n, 10);
    if (threaded)
        for (long i = 0; i < n; i++)
            mosquitto_loop_stop(s[i].m, false);
    for (long i = 0; i < n; i++)
        mosquitto_destroy(s[i].m);
    mosquitto_lib_cleanup();
    free(s);
    free(fds);
    return 0;
}
