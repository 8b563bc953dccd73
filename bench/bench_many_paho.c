/*
 * bench_many_paho.c - many Paho C MQTTAsync clients in one process (Paho runs
 * all of them on its own send and receive threads). See many_common.h.
 */
#include "many_common.h"

#include <MQTTAsync.h>
#include <pthread.h>

#define SLOTS 64

struct slot {
    MQTTAsync c;
    int connected;
    char topic[32];
    double next;
    int token_at[SLOTS];
    double sent_at[SLOTS];
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long connected, acked, sent, failed;

static void on_connect(void *ctx, MQTTAsync_successData *r)
{
    struct slot *s = ctx;
    (void)r;
    pthread_mutex_lock(&mu);
    if (!s->connected) {
        s->connected = 1;
        connected++;
    }
    pthread_mutex_unlock(&mu);
}

static void on_connect_failure(void *ctx, MQTTAsync_failureData *r)
{
    (void)ctx;
    (void)r;
    pthread_mutex_lock(&mu);
    failed++;
    pthread_mutex_unlock(&mu);
}

static void on_sent(void *ctx, MQTTAsync_successData *r)
{
    struct slot *s = ctx;
    double t = now_s();
    pthread_mutex_lock(&mu);
    acked++;
    int k = r->token % SLOTS;
    if (s->token_at[k] == r->token) {
        lat_add((t - s->sent_at[k]) * 1e6);
        s->token_at[k] = 0;
    }
    pthread_mutex_unlock(&mu);
}

static int on_message(void *ctx, char *topic, int len, MQTTAsync_message *m)
{
    (void)ctx;
    (void)len;
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

static void sleep_until(double t)
{
    double d = t - now_s();
    if (d <= 0)
        return;
    struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
    nanosleep(&ts, NULL);
}

static long count(long *v)
{
    pthread_mutex_lock(&mu);
    long x = *v;
    pthread_mutex_unlock(&mu);
    return x;
}

int main(int argc, char **argv)
{
    struct many_args a = {0};
    many_parse(argc, argv, &a);
    long n = a.clients;
    struct slot *s = calloc((size_t)n, sizeof *s);
    if (!s)
        return 1;
    char uri[128];
    snprintf(uri, sizeof uri, "tcp://%s:%d", a.host, a.port);
    touch_pages(s, (size_t)n * sizeof *s);
    long rss_before = proc_status("VmRSS");
    double t0 = now_s();
    long half = first_half(&a), rss_half = 0;
    for (long i = 0; i < n; i++) {
        if (i == half && !a.pub) {
            while (count(&connected) + count(&failed) < half && now_s() < t0 + 120)
                sleep_until(now_s() + 0.001);
            rss_half = proc_status("VmRSS");
        }
        char id[48];
        snprintf(id, sizeof id, "many-paho-%ld-%ld", (long)getpid(), i);
        snprintf(s[i].topic, sizeof s[i].topic, "many/%ld", i);
        if (MQTTAsync_create(&s[i].c, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL) != MQTTASYNC_SUCCESS)
            return 1;
        MQTTAsync_setCallbacks(s[i].c, &s[i], NULL, on_message, NULL);
        MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
        o.keepAliveInterval = (int)a.keepalive;
        o.cleansession = 1;
        o.onSuccess = on_connect;
        o.onFailure = on_connect_failure;
        o.context = &s[i];
        o.connectTimeout = 60;
        if (MQTTAsync_connect(s[i].c, &o) != MQTTASYNC_SUCCESS) {
            fprintf(stderr, "bench_many_paho: connect %ld failed\n", i);
            return 1;
        }
    }
    double deadline = t0 + 120;
    while (count(&connected) + count(&failed) < n && now_s() < deadline)
        sleep_until(now_s() + 0.001);
    double connect_s = now_s() - t0;

    if (!a.pub) {
        double c0 = cpu_s(), w0 = now_s();
        sleep_until(w0 + a.idle_s);
        report_idle("paho", &a, count(&connected), connect_s, rss_before, rss_half, proc_status("VmRSS"), cpu_s() - c0,
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
                    MQTTAsync_responseOptions r = MQTTAsync_responseOptions_initializer;
                    r.onSuccess = on_sent;
                    r.context = &s[i];
                    /* not under mu: Paho calls on_sent holding its own lock */
                    int rc = MQTTAsync_send(s[i].c, s[i].topic, sizeof payload, payload, 1, 0, &r);
                    pthread_mutex_lock(&mu);
                    if (rc == MQTTASYNC_SUCCESS) {
                        sent++;
                        s[i].token_at[r.token % SLOTS] = r.token;
                        s[i].sent_at[r.token % SLOTS] = t;
                    }
                    pthread_mutex_unlock(&mu);
                    s[i].next += period;
                }
                if (s[i].next < due)
                    due = s[i].next;
            }
            sleep_until(due);
        }
        double drain = now_s() + 10;
        while (count(&acked) < count(&sent) && now_s() < drain)
            sleep_until(now_s() + 0.001);
        pthread_mutex_lock(&mu);
        report_pub("paho", &a, connected, sent, acked, cpu_s() - c0, now_s() - w0);
        pthread_mutex_unlock(&mu);
    }
    for (long i = 0; i < n; i++) {
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
        d.timeout = 100;
        MQTTAsync_disconnect(s[i].c, &d);
    }
    sleep_until(now_s() + 0.5);
    for (long i = 0; i < n; i++)
        MQTTAsync_destroy(&s[i].c);
    free(s);
    return 0;
}
