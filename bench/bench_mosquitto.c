/*
 * bench_mosquitto.c - the bench/ workloads written against libmosquitto.
 * See bench_common.h for the command line, bench/README.md for the method.
 *
 * The client runs in the caller's loop (mosquitto_loop in main, callbacks in
 * main, no library thread), like bench_libmqtt: mosquitto_publish then writes
 * straight to the socket. MOSQ_OPT_TCP_NODELAY is on; the in-flight window is
 * mosquitto_max_inflight_messages_set(WINDOW).
 */
#include "bench_common.h"

#include <mosquitto.h>

static struct args A;
static int connected, subacked, lost;
static long acked; /* on_publish: PUBACK / PUBCOMP, or QoS 0 written */
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
    (void)m; (void)ud; (void)mid; (void)n; (void)granted;
    subacked = 1;
}

static void on_publish(struct mosquitto *m, void *ud, int mid)
{
    (void)m; (void)ud; (void)mid;
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

static void loop_until(struct mosquitto *m, int *flag, double seconds)
{
    double deadline = now_s() + seconds;
    while (!*flag && !lost && now_s() < deadline)
        mosquitto_loop(m, 100, 1);
}

static struct mosquitto *setup(const char *suffix)
{
    char id[64];
    struct mosquitto *m;
    int rc;
    snprintf(id, sizeof id, "bench-mosquitto-%s-%ld", suffix, (long)getpid());
    m = mosquitto_new(id, true, NULL);
    if (m == NULL)
        exit(1);
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_max_inflight_messages_set(m, A.window > 0 ? (unsigned)A.window : 20);
    mosquitto_connect_callback_set(m, on_connect);
    mosquitto_disconnect_callback_set(m, on_disconnect);
    mosquitto_subscribe_callback_set(m, on_subscribe);
    mosquitto_publish_callback_set(m, on_publish);
    mosquitto_message_callback_set(m, on_message);
    rc = mosquitto_connect(m, A.host, A.port, 60);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "mosquitto: connect: %s\n", mosquitto_strerror(rc));
        exit(1);
    }
    loop_until(m, &connected, 10);
    if (!connected)
        exit(1);
    return m;
}

static void subscribe(struct mosquitto *m, int qos)
{
    if (mosquitto_subscribe(m, NULL, A.topic, qos) != MOSQ_ERR_SUCCESS)
        exit(1);
    loop_until(m, &subacked, 10);
    if (!subacked) {
        fprintf(stderr, "mosquitto: no SUBACK\n");
        exit(1);
    }
}

static int run_pub(void)
{
    unsigned char p[PAYLOAD_LEN];
    struct mosquitto *m = setup("pub");
    long sent = 0;
    double t0, t1;
    struct usage u0;
    int rc;

    t0 = now_s();
    u0 = usage_now();
    /* at most WINDOW messages published and not yet acknowledged (QoS 1/2)
     * or not yet written (QoS 0: on_publish fires once it is written) */
    while (!lost && acked < A.count) {
        while (sent < A.count && sent - acked < A.window) {
            make_payload(p, (uint32_t)sent);
            rc = mosquitto_publish(m, NULL, A.topic, PAYLOAD_LEN, p, A.qos, false);
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
    pub_report(!lost && acked == A.count, sent, acked, t0, t1, u0);
    mosquitto_disconnect(m);
    mosquitto_loop(m, 10, 1);
    mosquitto_destroy(m);
    return lost;
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
    unsigned char p[PAYLOAD_LEN];
    struct mosquitto *m = setup("lat");
    long total = A.count + LAT_WARMUP, i;

    subscribe(m, A.qos);
    rtt = calloc((size_t)total, sizeof *rtt);
    for (i = 0; i < total && !lost; i++) {
        got_back = 0;
        rtt_n = i;
        make_payload(p, (uint32_t)i);
        t_sent = now_s();
        if (mosquitto_publish(m, NULL, A.topic, PAYLOAD_LEN, p, A.qos, false) != MOSQ_ERR_SUCCESS)
            break;
        loop_until(m, &got_back, 5);
        if (!got_back)
            break;
    }
    mosquitto_destroy(m);
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

int main(int argc, char **argv)
{
    int rc;
    parse_args(argc, argv, &A);
    mosquitto_lib_init();
    if (strcmp(A.mode, "pub") == 0)
        rc = run_pub();
    else if (strcmp(A.mode, "sub") == 0)
        rc = run_sub();
    else if (strcmp(A.mode, "lat") == 0)
        rc = run_lat();
    else
        rc = run_idle();
    mosquitto_lib_cleanup();
    return rc;
}
