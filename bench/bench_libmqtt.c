/*
 * bench_libmqtt.c - the bench/ workloads written against libmqtt.
 * See bench_common.h for the command line, bench/README.md for the method.
 *
 * The client runs in the caller's loop (mqtt_client_loop in main, callbacks in
 * main, no library thread): the fastest way here (one thread, no cross-thread
 * wake-ups). BENCH_LIBMQTT_LOOP=thread in the environment uses the loop thread
 * (mqtt_client_loop_start) instead, with main publishing and waiting on a
 * condition variable, for comparison.
 *
 * BENCH_V5=1: MQTT 5 (mqtt_client_set_protocol V5, mqtt_client_publish_v5,
 * mqtt_client_subscribe_v5); BENCH_USER_PROPERTY=1: one user property on every
 * PUBLISH, checked by the subscriber with mqtt_properties_get_user_at;
 * BENCH_TOPIC_ALIAS=1: mqtt_client_set_topic_alias_max(10), the library then
 * sends the topic once and the alias after. BENCH_TLS_CA=FILE: TLS (rustls)
 * through mqtt_client_set_tls with that CA. BENCH_WS_PATH=/PATH (libmqtt only):
 * MQTT over WebSocket, mqtt_client_connect_uri("ws://HOST:PORT/PATH"; wss://
 * with BENCH_TLS_CA). See bench_common.h.
 */
#include "bench_common.h"

#include <pthread.h>
#include <sched.h>

#include <mqtt.h>

static struct args A;
static int use_thread;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static volatile int subacked, subrefused, connected_lost;
static long acked;      /* PUBACK / PUBCOMP callbacks */
static long ack_errors; /* of those, with an error (MQTT 5: refused by the broker) */
static mqtt_properties *pub_props; /* BENCH_USER_PROPERTY: the user property */
static struct tally tally;
static volatile int done;

/* latency */
static double *rtt;
static long rtt_n;
static volatile int got_back;
static double t_sent;

static void on_suback(mqtt_client *c, const mqtt_data *d, void *ud)
{
    (void)c; (void)ud;
    pthread_mutex_lock(&mu);
    if (d->granted_qos_len < 1 || d->granted_qos[0] >= 0x80)
        subrefused = 1;
    subacked = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void on_ack(mqtt_client *c, const mqtt_data *d, void *ud)
{
    (void)c; (void)ud;
    if (d->error != MQTT_OK && ack_errors++ == 0)
        fprintf(stderr, "libmqtt: acknowledgement with error: %s (reason code 0x%02x)\n",
                mqtt_strerror(d->error), d->reason_code);
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

/* MQTT 5: the topic (aliases resolved) and, with BENCH_USER_PROPERTY, the property */
static int v5_message_ok(const mqtt_message *m)
{
    const char *k, *v;
    size_t kl, vl;
    if (strcmp(m->topic, A.topic) != 0)
        return 0;
    if (!A.user_property)
        return 1;
    return mqtt_properties_get_user_at(m->properties, 0, &k, &kl, &v, &vl) == MQTT_OK &&
           kl == sizeof BENCH_UP_KEY - 1 && memcmp(k, BENCH_UP_KEY, kl) == 0 &&
           vl == sizeof BENCH_UP_VALUE - 1 && memcmp(v, BENCH_UP_VALUE, vl) == 0;
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
    if (A.v5 && !v5_message_ok(d->message)) {
        tally_bad(&tally);
        return;
    }
    if (tally_add(&tally, d->message->payload, d->message->payload_len)) {
        pthread_mutex_lock(&mu);
        done = 1;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
}

/* a new client, configured (protocol, TLS, callbacks, loop thread), not connected */
static mqtt_client *create(const char *suffix, long n)
{
    char id[64];
    mqtt_client *c;
    int rc;
    snprintf(id, sizeof id, "bench-libmqtt-%s-%ld-%ld", suffix, (long)getpid(), n);
    c = mqtt_client_new(id, true);
    if (c == NULL)
        exit(1);
    if (A.v5 && mqtt_client_set_protocol(c, MQTT_PROTOCOL_V5) != MQTT_OK)
        exit(1);
    if (A.topic_alias && mqtt_client_set_topic_alias_max(c, 10) != MQTT_OK)
        exit(1);
    /* MQTT 5: Receive Maximum V5_RECEIVE_MAX (the default; see bench_common.h) */
    if (A.v5 && mqtt_client_set_max_incoming_qos2(c, V5_RECEIVE_MAX) != MQTT_OK)
        exit(1);
    if (A.tls_ca != NULL) {
        mqtt_tls_options o = {0};
        o.ca_file = A.tls_ca;
        if ((rc = mqtt_client_set_tls(c, &o)) != MQTT_OK) {
            fprintf(stderr, "libmqtt: set_tls: %s\n", mqtt_strerror(rc));
            exit(1);
        }
    }
    /* BENCH_STORE_DIR (+ BENCH_STORE_SYNC 0/1/2): the publisher keeps its
     * session in the built-in durable store there (run.sh --store) */
    if (strcmp(suffix, "pub") == 0 && getenv("BENCH_STORE_DIR") != NULL) {
        const char *sync = getenv("BENCH_STORE_SYNC");
        rc = mqtt_client_set_persistence(c, getenv("BENCH_STORE_DIR"),
                                         sync != NULL ? atoi(sync) : MQTT_SYNC_BATCH);
        if (rc != MQTT_OK) {
            fprintf(stderr, "libmqtt: set_persistence: %s\n", mqtt_strerror(rc));
            exit(1);
        }
    }
    /* BENCH_INFLIGHT: an in-flight window below WINDOW, so the application
     * keeps up to WINDOW messages unacknowledged and the rest wait in the
     * client's queue (run.sh --store, "application ahead") */
    if (getenv("BENCH_INFLIGHT") != NULL)
        mqtt_client_set_max_inflight(c, (uint32_t)atoi(getenv("BENCH_INFLIGHT")));
    else
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
    return c;
}

/* connect to HOST:PORT, over WebSocket at BENCH_WS_PATH if set (run.sh --ws) */
static int connect_client(mqtt_client *c)
{
    const char *ws_path = getenv("BENCH_WS_PATH");
    char uri[512];
    if (ws_path == NULL || *ws_path == '\0')
        return mqtt_client_connect(c, A.host, 60, (uint16_t)A.port);
    snprintf(uri, sizeof uri, "%s://%s:%d%s", A.tls_ca != NULL ? "wss" : "ws", A.host, A.port,
             ws_path);
    return mqtt_client_connect_uri(c, uri, 60);
}

static mqtt_client *setup(const char *suffix)
{
    mqtt_client *c = create(suffix, 0);
    int rc = connect_client(c);
    if (rc != MQTT_OK) {
        fprintf(stderr, "libmqtt: connect: %s\n", mqtt_strerror(rc));
        exit(1);
    }
    return c;
}

static void subscribe(mqtt_client *c, int qos)
{
    mqtt_subscription s = {A.topic, qos};
    mqtt_subscription_v5 s5 = {A.topic, qos, false, false, 0};
    double deadline = now_s() + 10;
    if ((A.v5 ? mqtt_client_subscribe_v5(c, &s5, 1, NULL) : mqtt_client_subscribe(c, &s, 1)) < 0)
        exit(1);
    if (use_thread) {
        pthread_mutex_lock(&mu);
        while (!subacked)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
    } else
        while (!subacked && now_s() < deadline)
            mqtt_client_loop(c, 100);
    if (!subacked || subrefused) {
        fprintf(stderr, "libmqtt: %s\n", subacked ? "subscription refused" : "no SUBACK");
        exit(1);
    }
}

static int publish(mqtt_client *c, const unsigned char *p)
{
    if (A.v5)
        return mqtt_client_publish_v5(c, A.topic, p, payload_len, A.qos, false, pub_props);
    return mqtt_client_publish(c, A.topic, p, payload_len, A.qos, false);
}

static int run_pub(void)
{
    unsigned char *p = payload_buffer();
    mqtt_client *c = setup("pub");
    long sent = 0;
    double t0, t1;
    struct usage u0;
    size_t qbytes = ((size_t)A.window + 1) * (payload_len + strlen(A.topic) + 64);
    int rc;

    mqtt_client_set_queue_limits(c, (size_t)A.window + 1, qbytes > 1 << 20 ? qbytes : 1 << 20);
    t0 = now_s();
    u0 = usage_now();
    if (!use_thread && A.qos == 0 && getenv("BENCH_BURST")) {
        /* A burst: publish as fast as publish accepts; run the loop only when
         * it refuses (the unsent-bytes limit), then until all is written. */
        int refused = 0;
        while (sent < A.count && !connected_lost) {
            make_payload(p, (uint32_t)sent);
            rc = publish(c, p);
            if (rc == MQTT_ERR_QUEUE_FULL) {
                /* write what the socket takes; if that was not enough, wait
                 * until it is writable again */
                mqtt_client_loop(c, refused++ ? 100 : 0);
                continue;
            }
            refused = 0;
            if (rc < 0) {
                fprintf(stderr, "libmqtt: publish: %s\n", mqtt_strerror(rc));
                return 1;
            }
            sent++;
        }
        while (mqtt_client_want_write(c) && !connected_lost)
            mqtt_client_loop(c, 1000);
    } else if (!use_thread) {
        /* QoS 1/2: keep WINDOW messages unacknowledged. QoS 0: publish
         * WINDOW messages, then run the loop until they are written. */
        while (!connected_lost && (A.qos ? acked < A.count : sent < A.count)) {
            long batch = 0;
            while (sent < A.count && (A.qos ? sent - acked < A.window : batch < A.window)) {
                make_payload(p, (uint32_t)sent);
                rc = publish(c, p);
                /* the unsent-bytes limit (256 KiB by default: 20 x 16 KiB is
                 * more): write what is queued, then go on */
                if (rc == MQTT_ERR_QUEUE_FULL && (batch > 0 || sent > acked))
                    break;
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
            rc = publish(c, p);
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
    pub_report(!connected_lost && sent == A.count && (A.qos == 0 || acked == A.count) &&
                   ack_errors == 0,
               sent, acked, t0, t1, u0);
    mqtt_client_disconnect(c);
    if (!use_thread)
        for (int i = 0; i < 20 && mqtt_client_is_connected(c); i++)
            mqtt_client_loop(c, 50);
    else
        usleep(50000);
    mqtt_client_free(c);
    free(p);
    return connected_lost || ack_errors != 0;
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
    unsigned char *p = payload_buffer();
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
        if (publish(c, p) < 0)
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
    free(p);
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

/*
 * COUNT times: a new client (configured, TLS loaded), connect (blocks until
 * CONNACK: the time measured), disconnect, free.
 */
static int run_handshake(void)
{
    double *t = calloc((size_t)A.count, sizeof *t);
    struct usage start = usage_now(), u0, u1;
    double cpu_connect = 0, t0;
    long i;
    int rc = MQTT_OK;

    for (i = 0; i < A.count; i++) {
        mqtt_client *c = create("hs", i);
        u0 = usage_now();
        t0 = now_s();
        rc = connect_client(c);
        t[i] = now_s() - t0;
        u1 = usage_now();
        cpu_connect += u1.cpu - u0.cpu;
        if (rc != MQTT_OK) {
            fprintf(stderr, "libmqtt: connect %ld: %s\n", i, mqtt_strerror(rc));
            mqtt_client_free(c);
            break;
        }
        mqtt_client_disconnect(c);
        if (!use_thread)
            for (int k = 0; k < 20 && mqtt_client_is_connected(c); k++)
                mqtt_client_loop(c, 50);
        mqtt_client_free(c);
    }
    rc = handshake_report(t, i, A.count, cpu_connect, usage_now().cpu - start.cpu);
    free(t);
    return rc;
}

int main(int argc, char **argv)
{
    const char *loop = getenv("BENCH_LIBMQTT_LOOP");
    int rc;
    parse_args(argc, argv, &A);
    use_thread = loop != NULL && strcmp(loop, "thread") == 0;
    if (A.user_property) {
        pub_props = mqtt_properties_new();
        if (pub_props == NULL || mqtt_properties_add_user(pub_props, BENCH_UP_KEY, BENCH_UP_VALUE) != MQTT_OK)
            exit(1);
    }
    if (strcmp(A.mode, "handshake") == 0)
        rc = run_handshake();
    else if (strcmp(A.mode, "pub") == 0)
        rc = run_pub();
    else if (strcmp(A.mode, "sub") == 0)
        rc = run_sub();
    else if (strcmp(A.mode, "lat") == 0)
        rc = run_lat();
    else
        rc = run_idle();
    mqtt_properties_free(pub_props);
    return rc;
}
