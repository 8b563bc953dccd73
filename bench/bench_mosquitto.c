/*
 * bench_mosquitto.c - the bench/ workloads written against libmosquitto.
 * See bench_common.h for the command line, bench/README.md for the method.
 *
 * The client runs in the caller's loop (mosquitto_loop in main, callbacks in
 * main, no library thread), like bench_libmqtt: mosquitto_publish then writes
 * straight to the socket. MOSQ_OPT_TCP_NODELAY is on; the in-flight window is
 * mosquitto_max_inflight_messages_set(WINDOW).
 *
 * BENCH_V5=1: MQTT 5 (MOSQ_OPT_PROTOCOL_VERSION = MQTT_PROTOCOL_V5,
 * mosquitto_publish_v5, mosquitto_subscribe_v5, the v5 publish and message
 * callbacks). BENCH_USER_PROPERTY=1: one user property on every PUBLISH
 * (mosquitto_property_add_string_pair), checked by the subscriber with
 * mosquitto_property_read_string_pair (libmosquitto's only way to read one: it
 * returns malloc'ed copies of key and value). BENCH_TOPIC_ALIAS=1: libmosquitto
 * does not assign aliases itself, so this program does, as mosquitto_pub does:
 * a Topic Alias property (1) on every PUBLISH, the topic on the first one and
 * NULL after (mosquitto_publish_v5 accepts a NULL topic when the properties
 * hold a Topic Alias). BENCH_TLS_CA=FILE: TLS (OpenSSL) through
 * mosquitto_tls_set with that CA. See bench_common.h.
 */
#include "bench_common.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>

static struct args A;
static int connected, subacked, subrefused, lost;
static long acked;      /* on_publish: PUBACK / PUBCOMP, or QoS 0 written */
static long ack_errors; /* MQTT 5: of those, refused by the broker (reason code >= 0x80) */
static mosquitto_property *pub_props; /* MQTT 5: user property and/or topic alias */
static int alias_sent;                /* the topic went out once with its alias */
static struct tally tally;
static int done;
static double *rtt;
static long rtt_n;
static int got_back;
static double t_sent;

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
    (void)m; (void)ud;
    if (rc == 0)
        connected = 1;
    else {
        fprintf(stderr, "mosquitto: CONNACK %d\n", rc);
        lost = 1;
    }
}

static void on_disconnect(struct mosquitto *m, void *ud, int rc)
{
    (void)m; (void)ud;
    if (rc != 0) {
        fprintf(stderr, "mosquitto: connection lost (%d)\n", rc);
        lost = 1;
    }
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted)
{
    (void)m; (void)ud; (void)mid;
    if (n < 1 || granted[0] >= 0x80)
        subrefused = 1;
    subacked = 1;
}

static void on_publish(struct mosquitto *m, void *ud, int mid)
{
    (void)m; (void)ud; (void)mid;
    acked++;
}

static void on_publish_v5(struct mosquitto *m, void *ud, int mid, int reason_code,
                          const mosquitto_property *props)
{
    (void)m; (void)ud; (void)mid; (void)props;
    if (reason_code >= 0x80 && ack_errors++ == 0)
        fprintf(stderr, "mosquitto: message refused, reason code 0x%02x\n", reason_code);
    acked++;
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg)
{
    (void)m; (void)ud;
    if (A.mode[0] == 'l') {
        double now = now_s();
        if (payload_seq(msg->payload) == (uint32_t)rtt_n) {
            rtt[rtt_n] = now - t_sent;
            got_back = 1;
        }
        return;
    }
    if (tally_add(&tally, msg->payload, (size_t)msg->payloadlen))
        done = 1;
}

/* MQTT 5: the topic (aliases resolved) and, with BENCH_USER_PROPERTY, the property */
static void on_message_v5(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
                          const mosquitto_property *props)
{
    if (A.mode[0] != 'l') {
        int ok = strcmp(msg->topic, A.topic) == 0;
        if (ok && A.user_property) {
            char *k = NULL, *v = NULL;
            ok = mosquitto_property_read_string_pair(props, MQTT_PROP_USER_PROPERTY, &k, &v,
                                                     false) != NULL &&
                 strcmp(k, BENCH_UP_KEY) == 0 && strcmp(v, BENCH_UP_VALUE) == 0;
            free(k);
            free(v);
        }
        if (!ok) {
            tally_bad(&tally);
            return;
        }
    }
    on_message(m, ud, msg);
}

static void loop_until(struct mosquitto *m, int *flag, double seconds)
{
    double deadline = now_s() + seconds;
    while (!*flag && !lost && now_s() < deadline)
        mosquitto_loop(m, 100, 1);
}

/* a new client, configured (protocol, TLS, callbacks), not connected */
static struct mosquitto *create(const char *suffix, long n)
{
    char id[64];
    struct mosquitto *m;
    int rc;
    snprintf(id, sizeof id, "bench-mosquitto-%s-%ld-%ld", suffix, (long)getpid(), n);
    m = mosquitto_new(id, true, NULL);
    if (m == NULL)
        exit(1);
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, A.v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    /* MQTT 5: Receive Maximum V5_RECEIVE_MAX, not libmosquitto's 20 (see bench_common.h) */
    if (A.v5)
        mosquitto_int_option(m, MOSQ_OPT_RECEIVE_MAXIMUM, V5_RECEIVE_MAX);
    if (A.tls_ca != NULL &&
        (rc = mosquitto_tls_set(m, A.tls_ca, NULL, NULL, NULL, NULL)) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "mosquitto: tls_set: %s\n", mosquitto_strerror(rc));
        exit(1);
    }
    mosquitto_max_inflight_messages_set(m, A.window > 0 ? (unsigned)A.window : 20);
    mosquitto_connect_callback_set(m, on_connect);
    mosquitto_disconnect_callback_set(m, on_disconnect);
    mosquitto_subscribe_callback_set(m, on_subscribe);
    if (A.v5) {
        mosquitto_publish_v5_callback_set(m, on_publish_v5);
        mosquitto_message_v5_callback_set(m, on_message_v5);
    } else {
        mosquitto_publish_callback_set(m, on_publish);
        mosquitto_message_callback_set(m, on_message);
    }
    return m;
}

/* connect and wait for CONNACK; 0 when connected */
static int connect_wait(struct mosquitto *m)
{
    int rc = mosquitto_connect(m, A.host, A.port, 60);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "mosquitto: connect: %s\n", mosquitto_strerror(rc));
        return 1;
    }
    loop_until(m, &connected, HANDSHAKE_TIMEOUT_S);
    return !connected;
}

static struct mosquitto *setup(const char *suffix)
{
    struct mosquitto *m = create(suffix, 0);
    if (connect_wait(m) != 0)
        exit(1);
    return m;
}

static int publish(struct mosquitto *m, const unsigned char *p)
{
    if (!A.v5)
        return mosquitto_publish(m, NULL, A.topic, (int)payload_len, p, A.qos, false);
    if (A.topic_alias) {
        /* the topic with its alias once, then the alias alone */
        const char *topic = alias_sent ? NULL : A.topic;
        alias_sent = 1;
        return mosquitto_publish_v5(m, NULL, topic, (int)payload_len, p, A.qos, false, pub_props);
    }
    return mosquitto_publish_v5(m, NULL, A.topic, (int)payload_len, p, A.qos, false, pub_props);
}

static void subscribe(struct mosquitto *m, int qos)
{
    if ((A.v5 ? mosquitto_subscribe_v5(m, NULL, A.topic, qos, 0, NULL)
              : mosquitto_subscribe(m, NULL, A.topic, qos)) != MOSQ_ERR_SUCCESS)
        exit(1);
    loop_until(m, &subacked, 10);
    if (!subacked || subrefused) {
        fprintf(stderr, "mosquitto: %s\n", subacked ? "subscription refused" : "no SUBACK");
        exit(1);
    }
}

static int run_pub(void)
{
    unsigned char *p = payload_buffer();
    struct mosquitto *m = setup("pub");
    long sent = 0;
    double t0, t1;
    struct usage u0;
    int rc;

    t0 = now_s();
    u0 = usage_now();
    if (A.qos == 0 && getenv("BENCH_BURST")) {
        /* A burst: mosquitto_publish writes what the socket takes and queues
         * the rest (without a bound); then the loop writes the queue out. */
        while (sent < A.count) {
            make_payload(p, (uint32_t)sent);
            rc = publish(m, p);
            if (rc != MOSQ_ERR_SUCCESS) {
                fprintf(stderr, "mosquitto: publish: %s\n", mosquitto_strerror(rc));
                return 1;
            }
            sent++;
        }
    }
    /* at most WINDOW messages published and not yet acknowledged (QoS 1/2)
     * or not yet written (QoS 0: on_publish fires once it is written) */
    while (!lost && acked < A.count) {
        while (sent < A.count && sent - acked < A.window) {
            make_payload(p, (uint32_t)sent);
            rc = publish(m, p);
            if (rc != MOSQ_ERR_SUCCESS) {
                fprintf(stderr, "mosquitto: publish: %s\n", mosquitto_strerror(rc));
                return 1;
            }
            sent++;
        }
        if (acked < A.count)
            mosquitto_loop(m, 1000, 1);
    }
    t1 = now_s();
    pub_report(!lost && acked == A.count && ack_errors == 0, sent, acked, t0, t1, u0);
    mosquitto_disconnect(m);
    mosquitto_loop(m, 10, 1);
    mosquitto_destroy(m);
    free(p);
    return lost || ack_errors != 0;
}

static int run_sub(void)
{
    struct mosquitto *m = setup("sub");
    double last_progress;
    struct usage u0;
    long last = 0;
    int status;

    tally_init(&tally, A.count);
    subscribe(m, A.qos);
    u0 = usage_now();
    printf("ready\n");
    fflush(stdout);
    last_progress = now_s();
    while (!done && !lost) {
        mosquitto_loop(m, 1000, 1);
        if (tally.distinct != last) {
            last = tally.distinct;
            last_progress = now_s();
        } else if (now_s() - last_progress > SUB_STALL_S)
            break;
    }
    status = tally_report(&tally, u0);
    mosquitto_destroy(m);
    return status;
}

static int run_lat(void)
{
    unsigned char *p = payload_buffer();
    struct mosquitto *m = setup("lat");
    long total = A.count + LAT_WARMUP, i;

    subscribe(m, A.qos);
    rtt = calloc((size_t)total, sizeof *rtt);
    for (i = 0; i < total && !lost; i++) {
        got_back = 0;
        rtt_n = i;
        make_payload(p, (uint32_t)i);
        t_sent = now_s();
        if (publish(m, p) != MOSQ_ERR_SUCCESS)
            break;
        loop_until(m, &got_back, 5);
        if (!got_back)
            break;
    }
    mosquitto_destroy(m);
    free(p);
    return latency_report(rtt + LAT_WARMUP, i > LAT_WARMUP ? i - LAT_WARMUP : 0, A.count);
}

static int run_idle(void)
{
    struct mosquitto *m = setup("idle");
    double end;
    subscribe(m, 0);
    end = now_s() + 1.0;
    while (now_s() < end)
        mosquitto_loop(m, 100, 1);
    printf("RESULT role=idle ok=1 vmhwm_kb=%ld\n", vmhwm_kb());
    mosquitto_destroy(m);
    return 0;
}

/*
 * COUNT times: a new client (configured), connect (mosquitto_connect, then
 * mosquitto_loop until the CONNACK callback: the time measured), disconnect,
 * destroy.
 */
static int run_handshake(void)
{
    double *t = calloc((size_t)A.count, sizeof *t);
    struct usage start = usage_now(), u0, u1;
    double cpu_connect = 0, t0;
    long i;
    int rc;

    for (i = 0; i < A.count; i++) {
        struct mosquitto *m = create("hs", i);
        connected = 0;
        u0 = usage_now();
        t0 = now_s();
        rc = connect_wait(m);
        t[i] = now_s() - t0;
        u1 = usage_now();
        cpu_connect += u1.cpu - u0.cpu;
        if (rc != 0) {
            fprintf(stderr, "mosquitto: connect %ld failed\n", i);
            mosquitto_destroy(m);
            break;
        }
        mosquitto_disconnect(m);
        mosquitto_loop(m, 10, 1);
        mosquitto_destroy(m);
    }
    rc = handshake_report(t, i, A.count, cpu_connect, usage_now().cpu - start.cpu);
    free(t);
    return rc;
}

int main(int argc, char **argv)
{
    int rc;
    parse_args(argc, argv, &A);
    mosquitto_lib_init();
    if (A.user_property &&
        mosquitto_property_add_string_pair(&pub_props, MQTT_PROP_USER_PROPERTY, BENCH_UP_KEY,
                                           BENCH_UP_VALUE) != MOSQ_ERR_SUCCESS)
        exit(1);
    if (A.topic_alias &&
        mosquitto_property_add_int16(&pub_props, MQTT_PROP_TOPIC_ALIAS, 1) != MOSQ_ERR_SUCCESS)
        exit(1);
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
    mosquitto_property_free_all(&pub_props);
    mosquitto_lib_cleanup();
    return rc;
}
