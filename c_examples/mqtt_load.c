/* mqtt_load: many MQTT clients on one libmqtt reactor, in the caller's thread.
 *
 *   mqtt_load conn|pub|sub [-h host] [-p port] [-c clients] [-i connect_interval_ms]
 *             [-I publish_interval_ms] [-t topic] [-q qos] [-s payload_bytes]
 *             [-k keepalive_s] [-n messages] [-d seconds] [-V 3|5]
 *             [--tls] [--cafile file] [--insecure] [-u username] [-P password]
 *
 * conn: connect the clients and hold the connections.
 * pub:  every client publishes to its topic every -I ms (-n messages each; 0: no
 *       limit). The payload starts with the send time, for the subscribers.
 * sub:  every client subscribes to its topic; messages are counted and their
 *       latency taken from the send time in the payload (same clock: run pub and
 *       sub on one machine, or on machines with synchronised clocks). -n: stop
 *       after that many messages in all.
 * -t:   "%i" is replaced by the client's index (default "load/%i").
 * -d:   stop after that many seconds (default: 10 for conn and pub without -n,
 *       none otherwise).
 *
 * One status line per second: connected clients, messages sent and received in
 * that second, errors so far. At the end a summary: connect rate, throughput,
 * latency p50/p99/max (sub: end to end; pub at QoS 1/2: until PUBACK/PUBCOMP).
 * Exit status: 0 when every client connected and no error was counted.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <mqtt.h>

enum mode { MODE_CONN, MODE_PUB, MODE_SUB };

struct options {
    enum mode mode;
    const char *host;
    int port;
    long clients;
    long connect_interval_ms;
    long publish_interval_ms;
    const char *topic;
    int qos;
    long payload_bytes;
    int keepalive;
    long messages;
    double seconds;
    int version;
    bool tls;
    const char *cafile;
    bool insecure;
    const char *username;
    const char *password;
};

/* Acknowledgement latency in pub mode: send times of the last few mids. */
#define ACK_SLOTS 64

struct load_client {
    mqtt_client *client;
    long index;
    char *topic;
    bool connected;
    bool ever_connected;
    bool subscribed;
    long published;
    double next_publish;
    uint16_t ack_mid[ACK_SLOTS];
    double ack_sent[ACK_SLOTS];
};

struct stats {
    long connected;
    long ever_connected;
    long subscribed;
    long sent, received, acked;
    long sent_second, received_second;
    long errors;
    double first_connack, last_connack;
    double *latency_us;
    size_t latency_len, latency_cap;
};

static struct options opt = {
    .mode = MODE_CONN,
    .host = "127.0.0.1",
    .port = 1883,
    .clients = 100,
    .connect_interval_ms = 0,
    .publish_interval_ms = 1000,
    .topic = "load/%i",
    .qos = 0,
    .payload_bytes = 64,
    .keepalive = 60,
    .messages = 0,
    .seconds = -1,
    .version = 3,
};
static struct stats st;
static volatile sig_atomic_t interrupted;
/* pub: the earliest next_publish of all connected clients; no scan before it */
static double next_publish_due;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void record_latency(double us)
{
    if (st.latency_len == st.latency_cap) {
        size_t cap = st.latency_cap ? st.latency_cap * 2 : 4096;
        double *grown = realloc(st.latency_us, cap * sizeof *grown);
        if (!grown)
            return; /* keep the samples so far */
        st.latency_us = grown;
        st.latency_cap = cap;
    }
    st.latency_us[st.latency_len++] = us;
}

static void on_connack(mqtt_client *c, const mqtt_data *d, void *user_data)
{
    struct load_client *lc = user_data;
    (void)c;
    if (d->return_code != 0) {
        st.errors++;
        return;
    }
    double t = now_s();
    if (!lc->ever_connected) {
        lc->ever_connected = true;
        st.ever_connected++;
        if (st.first_connack == 0)
            st.first_connack = t;
        st.last_connack = t;
    }
    if (!lc->connected) {
        lc->connected = true;
        st.connected++;
        lc->next_publish = t;
        next_publish_due = 0;
    }
    if (opt.mode == MODE_SUB && !lc->subscribed) {
        mqtt_subscription sub = {lc->topic, opt.qos};
        if (mqtt_client_subscribe(lc->client, &sub, 1) < 0)
            st.errors++;
    }
}

static void on_disconnect(mqtt_client *c, const mqtt_data *d, void *user_data)
{
    struct load_client *lc = user_data;
    (void)c;
    if (lc->connected) {
        lc->connected = false;
        st.connected--;
    }
    if (d->error != MQTT_OK)
        st.errors++;
}

static void on_suback(mqtt_client *c, const mqtt_data *d, void *user_data)
{
    struct load_client *lc = user_data;
    (void)c;
    if (d->granted_qos_len < 1 || d->granted_qos[0] == 0x80) {
        st.errors++;
        return;
    }
    if (!lc->subscribed) {
        lc->subscribed = true;
        st.subscribed++;
    }
}

static void on_ack(mqtt_client *c, const mqtt_data *d, void *user_data)
{
    struct load_client *lc = user_data;
    (void)c;
    if (d->error != MQTT_OK) {
        st.errors++;
        return;
    }
    st.acked++;
    unsigned slot = d->mid % ACK_SLOTS;
    if (lc->ack_mid[slot] == d->mid) {
        record_latency((now_s() - lc->ack_sent[slot]) * 1e6);
        lc->ack_mid[slot] = 0;
    }
}

static void on_message(mqtt_client *c, const mqtt_data *d, void *user_data)
{
    (void)c;
    (void)user_data;
    const mqtt_message *m = d->message;
    if (!m)
        return;
    st.received++;
    st.received_second++;
    if (m->payload_len >= 8) {
        uint64_t sent_ns;
        memcpy(&sent_ns, m->payload, 8);
        uint64_t now = wall_ns();
        if (now >= sent_ns)
            record_latency((double)(now - sent_ns) / 1e3);
    }
}

static char *topic_for(long index)
{
    const char *at = strstr(opt.topic, "%i");
    size_t len = strlen(opt.topic) + 24;
    char *t = malloc(len);
    if (!t)
        return NULL;
    if (at)
        snprintf(t, len, "%.*s%ld%s", (int)(at - opt.topic), opt.topic, index, at + 2);
    else
        snprintf(t, len, "%s", opt.topic);
    return t;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(double p)
{
    if (!st.latency_len)
        return 0;
    size_t i = (size_t)(p * (double)(st.latency_len - 1) + 0.5);
    return st.latency_us[i];
}

static void usage(void)
{
    fprintf(stderr,
            "usage: mqtt_load conn|pub|sub [-h host] [-p port] [-c clients] [-i connect_interval_ms]\n"
            "       [-I publish_interval_ms] [-t topic(%%i = index)] [-q qos] [-s payload_bytes]\n"
            "       [-k keepalive_s] [-n messages] [-d seconds] [-V 3|5] [--tls] [--cafile file]\n"
            "       [--insecure] [-u username] [-P password]\n");
    exit(2);
}

static long number(const char *flag, const char *value, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || *end || v < min || v > max) {
        fprintf(stderr, "mqtt_load: %s wants a number in [%ld, %ld], not \"%s\"\n", flag, min, max, value);
        exit(2);
    }
    return v;
}

static void parse(int argc, char **argv)
{
    if (argc < 2)
        usage();
    if (!strcmp(argv[1], "conn"))
        opt.mode = MODE_CONN;
    else if (!strcmp(argv[1], "pub"))
        opt.mode = MODE_PUB;
    else if (!strcmp(argv[1], "sub"))
        opt.mode = MODE_SUB;
    else
        usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes_value = true;
        if (!strcmp(a, "--tls")) {
            opt.tls = true;
            takes_value = false;
        } else if (!strcmp(a, "--insecure")) {
            opt.insecure = true;
            opt.tls = true;
            takes_value = false;
        } else if (!v) {
            usage();
        } else if (!strcmp(a, "--cafile")) {
            opt.cafile = v;
            opt.tls = true;
        } else if (!strcmp(a, "-h")) {
            opt.host = v;
        } else if (!strcmp(a, "-p")) {
            opt.port = (int)number(a, v, 1, 65535);
        } else if (!strcmp(a, "-c")) {
            opt.clients = number(a, v, 1, 1000000);
        } else if (!strcmp(a, "-i")) {
            opt.connect_interval_ms = number(a, v, 0, 3600000);
        } else if (!strcmp(a, "-I")) {
            opt.publish_interval_ms = number(a, v, 0, 3600000);
        } else if (!strcmp(a, "-t")) {
            opt.topic = v;
        } else if (!strcmp(a, "-q")) {
            opt.qos = (int)number(a, v, 0, 2);
        } else if (!strcmp(a, "-s")) {
            opt.payload_bytes = number(a, v, 0, 256 * 1024 * 1024);
        } else if (!strcmp(a, "-k")) {
            opt.keepalive = (int)number(a, v, 0, 65535);
        } else if (!strcmp(a, "-n")) {
            opt.messages = number(a, v, 0, 1L << 40);
        } else if (!strcmp(a, "-d")) {
            opt.seconds = (double)number(a, v, 1, 86400 * 365);
        } else if (!strcmp(a, "-V")) {
            opt.version = (int)number(a, v, 3, 5);
            if (opt.version == 4)
                usage();
        } else if (!strcmp(a, "-u")) {
            opt.username = v;
        } else if (!strcmp(a, "-P")) {
            opt.password = v;
        } else {
            usage();
        }
        if (takes_value)
            i++;
    }
    if (opt.seconds < 0 && (opt.mode == MODE_CONN || (opt.mode == MODE_PUB && opt.messages == 0)))
        opt.seconds = 10;
    /* the send time needs 8 bytes */
    if (opt.payload_bytes < 8)
        opt.payload_bytes = 8;
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Enough descriptors for the clients (and the reactor's own). */
static void raise_fd_limit(long clients)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)clients + 64;
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = want <= rl.rlim_max ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want)
        fprintf(stderr, "mqtt_load: only %ju file descriptors allowed (ulimit -n) for %ld clients\n",
                (uintmax_t)rl.rlim_cur, clients);
}

static int setup_client(mqtt_reactor *reactor, struct load_client *lc, long index)
{
    char id[64];
    snprintf(id, sizeof id, "mqtt_load-%ld-%ld", (long)getpid(), index);
    lc->index = index;
    lc->topic = topic_for(index);
    lc->client = mqtt_client_new(id, true);
    if (!lc->topic || !lc->client)
        return MQTT_ERR_NO_MEMORY;
    mqtt_client *c = lc->client;
    int rc = MQTT_OK;
    if (opt.version == 5)
        rc = mqtt_client_set_protocol(c, MQTT_PROTOCOL_V5);
    if (rc == MQTT_OK && (opt.username || opt.password))
        rc = mqtt_client_set_credentials(c, opt.username, opt.password);
    if (rc == MQTT_OK && opt.tls) {
        mqtt_tls_options tls = {0};
        tls.ca_file = opt.cafile;
        tls.insecure_skip_verify = opt.insecure;
        rc = mqtt_client_set_tls(c, &tls);
    }
    /* reconnection spread over 1-10 s so that a broker restart is not met by
     * every client at once */
    if (rc == MQTT_OK)
        rc = mqtt_client_set_reconnect(c, 1000, 10000);
    if (rc == MQTT_OK)
        rc = mqtt_client_on(c, MQTT_CONNACK, on_connack, NULL, 0, lc);
    if (rc == MQTT_OK)
        rc = mqtt_client_on(c, MQTT_DISCONNECT, on_disconnect, NULL, 0, lc);
    if (rc == MQTT_OK)
        rc = mqtt_client_on(c, MQTT_SUBACK, on_suback, NULL, 0, lc);
    if (rc == MQTT_OK && opt.qos > 0)
        rc = mqtt_client_on(c, opt.qos == 1 ? MQTT_PUBACK : MQTT_PUBCOMP, on_ack, NULL, 0, lc);
    if (rc == MQTT_OK)
        rc = mqtt_reactor_add(reactor, c, on_message, lc);
    return rc;
}

static void publish_due(struct load_client *lcs, unsigned char *payload, double t)
{
    if (t < next_publish_due)
        return;
    double earliest = t + 3600;
    for (long i = 0; i < opt.clients; i++) {
        struct load_client *lc = &lcs[i];
        if (opt.messages && lc->published >= opt.messages)
            continue;
        if (!lc->connected)
            continue; /* its CONNACK resets next_publish_due */
        if (t < lc->next_publish) {
            if (lc->next_publish < earliest)
                earliest = lc->next_publish;
            continue;
        }
        uint64_t sent_ns = wall_ns();
        memcpy(payload, &sent_ns, 8);
        int mid = mqtt_client_publish(lc->client, lc->topic, payload, (size_t)opt.payload_bytes, opt.qos, false);
        if (mid < 0) {
            st.errors++;
        } else {
            lc->published++;
            st.sent++;
            st.sent_second++;
            if (mid > 0) {
                lc->ack_mid[mid % ACK_SLOTS] = (uint16_t)mid;
                lc->ack_sent[mid % ACK_SLOTS] = t;
            }
        }
        /* keep the client's rhythm; skip intervals missed rather than burst */
        lc->next_publish += (double)opt.publish_interval_ms / 1000.0;
        if (lc->next_publish < t)
            lc->next_publish = t;
        if (lc->next_publish < earliest)
            earliest = lc->next_publish;
    }
    next_publish_due = earliest;
}

static bool finished(double t, double start)
{
    if (interrupted)
        return true;
    if (opt.seconds > 0 && t - start >= opt.seconds)
        return true;
    if (opt.mode == MODE_SUB && opt.messages && st.received >= opt.messages)
        return true;
    if (opt.mode == MODE_PUB && opt.messages && st.sent >= opt.messages * opt.clients &&
        (opt.qos == 0 || st.acked >= st.sent))
        return true;
    return false;
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    raise_fd_limit(opt.clients);

    mqtt_reactor *reactor = mqtt_reactor_new();
    struct load_client *lcs = calloc((size_t)opt.clients, sizeof *lcs);
    unsigned char *payload = calloc(1, (size_t)opt.payload_bytes);
    if (!reactor || !lcs || !payload) {
        fprintf(stderr, "mqtt_load: out of memory\n");
        return 1;
    }
    for (long i = 0; i < opt.clients; i++) {
        int rc = setup_client(reactor, &lcs[i], i);
        if (rc != MQTT_OK) {
            fprintf(stderr, "mqtt_load: client %ld: %s\n", i, mqtt_strerror(rc));
            return 1;
        }
    }

    double start = now_s();
    double next_status = start + 1;
    double next_connect = start;
    long started = 0;
    while (!finished(now_s(), start)) {
        double t = now_s();
        /* start connections at the configured interval (all at once for 0) */
        while (started < opt.clients && t >= next_connect) {
            struct load_client *lc = &lcs[started];
            int rc = mqtt_client_connect_async(lc->client, opt.host, (uint16_t)opt.keepalive, (uint16_t)opt.port);
            if (rc != MQTT_OK) {
                fprintf(stderr, "mqtt_load: connect %ld: %s\n", started, mqtt_strerror(rc));
                st.errors++;
            }
            started++;
            next_connect += (double)opt.connect_interval_ms / 1000.0;
        }
        if (opt.mode == MODE_PUB)
            publish_due(lcs, payload, t);
        if (t >= next_status) {
            printf("%6.0fs connected %ld/%ld", t - start, st.connected, opt.clients);
            if (opt.mode == MODE_SUB)
                printf(" subscribed %ld/%ld", st.subscribed, opt.clients);
            printf(" sent %ld/s received %ld/s errors %ld\n", st.sent_second, st.received_second, st.errors);
            fflush(stdout);
            st.sent_second = st.received_second = 0;
            next_status += 1;
        }
        /* run the reactor until the next thing this program has to do */
        double wake = next_status;
        if (started < opt.clients && next_connect < wake)
            wake = next_connect;
        if (opt.mode == MODE_PUB && opt.publish_interval_ms < 1000)
            wake = t + (double)opt.publish_interval_ms / 1000.0 < wake ? t + (double)opt.publish_interval_ms / 1000.0
                                                                       : wake;
        int wait_ms = (int)((wake - now_s()) * 1000.0);
        if (wait_ms < 0)
            wait_ms = 0;
        int rc = mqtt_reactor_run(reactor, wait_ms);
        if (rc < 0) {
            fprintf(stderr, "mqtt_load: reactor: %s\n", mqtt_strerror(rc));
            st.errors++;
            break;
        }
    }
    double elapsed = now_s() - start;

    /* disconnect cleanly: DISCONNECT packets written before the reactor goes */
    for (long i = 0; i < opt.clients; i++)
        mqtt_client_disconnect(lcs[i].client);
    double deadline = now_s() + 5;
    while (st.connected > 0 && now_s() < deadline)
        mqtt_reactor_run(reactor, 100);

    if (st.latency_len)
        qsort(st.latency_us, st.latency_len, sizeof *st.latency_us, compare_double);
    double connect_span = st.last_connack - start;
    printf("summary: mode %s clients %ld connected %ld (%.0f connects/s over %.3f s)",
           opt.mode == MODE_CONN ? "conn" : opt.mode == MODE_PUB ? "pub" : "sub", opt.clients, st.ever_connected,
           connect_span > 0 ? (double)st.ever_connected / connect_span : 0.0, connect_span > 0 ? connect_span : 0.0);
    if (opt.mode == MODE_SUB)
        printf(" subscribed %ld", st.subscribed);
    printf(" sent %ld (%.0f/s) received %ld (%.0f/s)", st.sent, (double)st.sent / elapsed, st.received,
           (double)st.received / elapsed);
    if (opt.mode == MODE_PUB && opt.qos > 0)
        printf(" acked %ld", st.acked);
    printf(" errors %ld", st.errors);
    if (st.latency_len)
        printf(" latency_us p50 %.0f p99 %.0f max %.0f (%s, %zu samples)", percentile(0.50), percentile(0.99),
               st.latency_us[st.latency_len - 1], opt.mode == MODE_SUB ? "end to end" : "until acknowledged",
               st.latency_len);
    printf(" elapsed %.3f s\n", elapsed);

    for (long i = 0; i < opt.clients; i++) {
        mqtt_client_free(lcs[i].client);
        free(lcs[i].topic);
    }
    mqtt_reactor_free(reactor);
    free(lcs);
    free(payload);
    free(st.latency_us);
    return st.ever_connected == opt.clients && st.errors == 0 ? 0 : 1;
}
