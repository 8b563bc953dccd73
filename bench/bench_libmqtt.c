/*
 * bench_libmqtt.c - the bench/ workloads written against libmqtt.
 * See bench_common.h for the command line, bench/README.md for the method.
 *
 * The client runs in the caller's loop (mqtt_client_loop in main, callbacks in
 * main, no library thread): the fastest way here (one thread, no cross-thread
 * wake-ups). BENCH_LIBMQTT_LOOP=thread in the environment uses the loop thread
 * (mqtt_client_loop_start) instead, with main publishing and waiting on a
 * condition variable, for comparison.
 */
#include "bench_common.h"

#include <pthread.h>
#include <sched.h>

#include <mqtt.h>

static struct args A;
static int use_thread;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static volatile int subacked, connected_lost;
static long acked; /* PUBACK / PUBCOMP callbacks */
static struct tally tally;
static volatile int done;

/* latency */
static double *rtt;
static long rtt_n;
static volatile int got_back;
static double t_sent;

static void on_suback(mqtt_client *c, const mqtt_data *d, void *ud)
{
    (void)c; (void)d; (void)ud;
    pthread_mutex_lock(&mu);
    subacked = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void on_ack(mqtt_client *c, const mqtt_data *d, void *ud)
{
    (void)c; (void)d; (void)ud;
    if (use_thread) {
        pthread_mutex_lock(&mu);
        acked++;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
    } else
        acked++;
}

static void on_disconnect(mqtt_client *c, const mqtt_data *d, void *ud)
{
    (void)c; (void)ud;
    if (d->error != MQTT_OK) {
        fprintf(stderr, "libmqtt: connection lost: %s\n", mqtt_strerror(d->error));
        connected_lost = 1;
    }
}

static bool has_message(const mqtt_data *d, void *ud)
{
    (void)ud;
    return d->message != NULL;
}

static void on_message(mqtt_client *c, const mqtt_data *d, void *ud)
{
    (void)c; (void)ud;
    if (d->message == NULL)
        return;
    if (A.mode[0] == 'l') {
        double now = now_s();
        if (payload_seq(d->message->payload) == (uint32_t)rtt_n) {
            rtt[rtt_n] = now - t_sent;
            got_back = 1;
        }
        return;
    }
    if (tally_add(&tally, d->message->payload, d->message->payload_len)) {
        pthread_mutex_lock(&mu);
        done = 1;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
}

static mqtt_client *setup(const char *suffix)
{
    char id[64];
    mqtt_client *c;
    int rc;
    snprintf(id, sizeof id, "bench-libmqtt-%s-%ld", suffix, (long)getpid());
    c = mqtt_client_new(id, true);
    if (c == NULL)
        exit(1);
    mqtt_client_set_max_inflight(c, A.window > 0 ? (uint32_t)A.window : 20);
    mqtt_client_on(c, MQTT_SUBACK, on_suback, NULL, 0, NULL);
    mqtt_client_on(c, MQTT_PUBACK, on_ack, NULL, 0, NULL);
    mqtt_client_on(c, MQTT_PUBCOMP, on_ack, NULL, 0, NULL);
    mqtt_client_on(c, MQTT_DISCONNECT, on_disconnect, NULL, 0, NULL);
    if (use_thread) {
        if (mqtt_client_loop_start(c, on_message, NULL) != MQTT_OK)
            exit(1);
    } else {
        mqtt_client_on(c, MQTT_PUBLISH, on_message, has_message, -1, NULL);
        mqtt_client_on(c, MQTT_PUBREL, on_message, NULL, 0, NULL);
    }
    rc = mqtt_client_connect(c, A.host, 60, (uint16_t)A.port);
    if (rc != MQTT_OK) {
        fprintf(stderr, "libmqtt: connect: %s\n", mqtt_strerror(rc));
        exit(1);
    }
    return c;
}

static void subscribe(mqtt_client *c, int qos)
{
    mqtt_subscription s = {A.topic, qos};
    double deadline = now_s() + 10;
    if (mqtt_client_subscribe(c, &s, 1) < 0)
        exit(1);
    if (use_thread) {
        pthread_mutex_lock(&mu);
        while (!subacked)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
    } else
        while (!subacked && now_s() < deadline)
            mqtt_client_loop(c, 100);
    if (!subacked) {
        fprintf(stderr, "libmqtt: no SUBACK\n");
        exit(1);
    }
}

static int run_pub(void)
{
    unsigned char p[PAYLOAD_LEN];
    mqtt_client *c = setup("pub");
    long sent = 0;
    double t0, t1;
    struct usage u0;
    int rc;

    mqtt_client_set_queue_limits(c, (size_t)A.window + 1, 1 << 20);
    t0 = now_s();
    u0 = usage_now();
    if (!use_thread) {
        /* QoS 1/2: keep WINDOW messages unacknowledged. QoS 0: publish
         * WINDOW messages, then run the loop until they are written. */
        while (!connected_lost && (A.qos ? acked < A.count : sent < A.count)) {
            long batch = 0;
            while (sent < A.count && (A.qos ? sent - acked < A.window : batch < A.window)) {
                make_payload(p, (uint32_t)sent);
                rc = mqtt_client_publish(c, A.topic, p, PAYLOAD_LEN, A.qos, false);
                if (rc < 0) {
                    fprintf(stderr, "libmqtt: publish: %s\n", mqtt_strerror(rc));
                    return 1;
                }
                sent++;
                batch++;
            }
            if (A.qos)
                mqtt_client_loop(c, 1000);
            else {
                mqtt_client_loop(c, 0);
                while (mqtt_client_want_write(c) && !connected_lost)
                    mqtt_client_loop(c, 1000);
            }
        }
    } else {
        /* loop thread: main publishes; QoS 1/2 wait for acknowledgements,
         * QoS 0 yields while the queue is full */
        while (sent < A.count) {
            if (A.qos) {
                pthread_mutex_lock(&mu);
                while (sent - acked >= A.window && !connected_lost)
                    pthread_cond_wait(&cv, &mu);
                pthread_mutex_unlock(&mu);
            }
            make_payload(p, (uint32_t)sent);
            rc = mqtt_client_publish(c, A.topic, p, PAYLOAD_LEN, A.qos, false);
            if (rc == MQTT_ERR_QUEUE_FULL) {
                sched_yield();
                continue;
            }
            if (rc < 0) {
                fprintf(stderr, "libmqtt: publish: %s\n", mqtt_strerror(rc));
                return 1;
            }
            sent++;
        }
        if (A.qos) {
            pthread_mutex_lock(&mu);
            while (acked < A.count && !connected_lost)
                pthread_cond_wait(&cv, &mu);
            pthread_mutex_unlock(&mu);
        }
    }
    t1 = now_s();
    pub_report(!connected_lost && sent == A.count && (A.qos == 0 || acked == A.count), sent,
               acked, t0, t1, u0);
    mqtt_client_disconnect(c);
    if (!use_thread)
        for (int i = 0; i < 20 && mqtt_client_is_connected(c); i++)
            mqtt_client_loop(c, 50);
    else
        usleep(50000);
    mqtt_client_free(c);
    return connected_lost;
}

static int run_sub(void)
{
    mqtt_client *c = setup("sub");
    double last_progress;
    struct usage u0;
    long last = 0;
    int status;

    tally_init(&tally, A.count);
    subscribe(c, A.qos);
    u0 = usage_now();
    printf("ready\n");
    fflush(stdout);
    last_progress = now_s();
    if (!use_thread) {
        while (!done && !connected_lost) {
            mqtt_client_loop(c, 1000);
            if (tally.distinct != last) {
                last = tally.distinct;
                last_progress = now_s();
            } else if (now_s() - last_progress > SUB_STALL_S)
                break;
        }
    } else {
        pthread_mutex_lock(&mu);
        while (!done && !connected_lost) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&cv, &mu, &ts);
            if (tally.distinct != last) {
                last = tally.distinct;
                last_progress = now_s();
            } else if (now_s() - last_progress > SUB_STALL_S)
                break;
        }
        pthread_mutex_unlock(&mu);
    }
    status = tally_report(&tally, u0);
    mqtt_client_free(c);
    return status;
}

static int run_lat(void)
{
    unsigned char p[PAYLOAD_LEN];
    mqtt_client *c = setup("lat");
    long total = A.count + LAT_WARMUP, i;
    double deadline;

    subscribe(c, A.qos);
    rtt = calloc((size_t)total, sizeof *rtt);
    for (i = 0; i < total && !connected_lost; i++) {
        got_back = 0;
        rtt_n = i;
        make_payload(p, (uint32_t)i);
        t_sent = now_s();
        if (mqtt_client_publish(c, A.topic, p, PAYLOAD_LEN, A.qos, false) < 0)
            break;
        deadline = t_sent + 5;
        if (use_thread) {
            while (!got_back && now_s() < deadline)
                ; /* spin: the loop thread sets got_back */
        } else
            while (!got_back && now_s() < deadline)
                mqtt_client_loop(c, 1000);
        if (!got_back)
            break;
    }
    mqtt_client_free(c);
    return latency_report(rtt + LAT_WARMUP, i > LAT_WARMUP ? i - LAT_WARMUP : 0, A.count);
}

static int run_idle(void)
{
    mqtt_client *c = setup("idle");
    double end;
    subscribe(c, 0);
    end = now_s() + 1.0;
    if (use_thread)
        usleep(1000000);
    else
        while (now_s() < end)
            mqtt_client_loop(c, 100);
    printf("RESULT role=idle ok=1 vmhwm_kb=%ld\n", vmhwm_kb());
    mqtt_client_free(c);
    return 0;
}

int main(int argc, char **argv)
{
    const char *loop = getenv("BENCH_LIBMQTT_LOOP");
    parse_args(argc, argv, &A);
    use_thread = loop != NULL && strcmp(loop, "thread") == 0;
    if (strcmp(A.mode, "pub") == 0)
        return run_pub();
    if (strcmp(A.mode, "sub") == 0)
        return run_sub();
    if (strcmp(A.mode, "lat") == 0)
        return run_lat();
    return run_idle();
}
