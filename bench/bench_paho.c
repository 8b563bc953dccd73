/*
 * bench_paho.c - the bench/ workloads written against Paho C (MQTTAsync).
 * See bench_common.h for the command line, bench/README.md for the method.
 *
 * MQTTAsync always runs its own threads (a send thread and a receive thread);
 * callbacks run there. main publishes and waits on a condition variable that
 * the callbacks signal. The in-flight window is the connect options'
 * maxInflight; main never has more than WINDOW messages published and not yet
 * completed (onSuccess: PUBACK / PUBCOMP, or for QoS 0 the message written),
 * since Paho refuses sends once its queue exceeds the in-flight limit.
 *
 * Paho C 1.3 never sets TCP_NODELAY and has no option for it (strace shows no
 * setsockopt): without it the QoS 1 round trip is ~44 ms (Nagle + delayed ACK).
 * So, once connected, this program sets TCP_NODELAY on every TCP socket of the
 * process (the client's only one). BENCH_PAHO_NODELAY=0 skips that.
 *
 * BENCH_TLS_CA=FILE: TLS (OpenSSL): an ssl:// URI with MQTTAsync_SSLOptions
 * (trustStore = FILE, enableServerCertAuth, verify: host name checked). Needs
 * the TLS build of the library: bench/run.sh links this same file twice, as
 * bench_paho (-lpaho-mqtt3a, no TLS) and bench_paho_tls (-lpaho-mqtt3as).
 * MQTT 5 (BENCH_V5 and the rest) is not done here: exit status 2.
 */
#include "bench_common.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>

#include <MQTTAsync.h>

static struct args A;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int connected, subacked, lost, failed, disconnected;
static double t_connect;        /* when MQTTAsync_connect was called */
static struct usage u_connect;  /* the process's usage then */
static long acked;
static int main_waiting;
static struct tally tally;
static int done;
static double *rtt;
static long rtt_n;
static int got_back;
static double t_sent;

static void wake(void)
{
    pthread_cond_broadcast(&cv);
}

static void on_connect(void *ctx, MQTTAsync_successData *resp)
{
    (void)ctx; (void)resp;
    pthread_mutex_lock(&mu);
    connected = 1;
    wake();
    pthread_mutex_unlock(&mu);
}

static void on_failure(void *ctx, MQTTAsync_failureData *resp)
{
    (void)ctx;
    fprintf(stderr, "paho: request failed (%d)\n", resp ? resp->code : 0);
    pthread_mutex_lock(&mu);
    failed = 1;
    wake();
    pthread_mutex_unlock(&mu);
}

static void on_disconnected(void *ctx, MQTTAsync_successData *resp)
{
    (void)ctx; (void)resp;
    pthread_mutex_lock(&mu);
    disconnected = 1;
    wake();
    pthread_mutex_unlock(&mu);
}

static void on_subscribe(void *ctx, MQTTAsync_successData *resp)
{
    (void)ctx; (void)resp;
    pthread_mutex_lock(&mu);
    subacked = 1;
    wake();
    pthread_mutex_unlock(&mu);
}

static void on_sent(void *ctx, MQTTAsync_successData *resp)
{
    (void)ctx; (void)resp;
    pthread_mutex_lock(&mu);
    acked++;
    if (main_waiting)
        pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

static void on_lost(void *ctx, char *cause)
{
    (void)ctx;
    fprintf(stderr, "paho: connection lost: %s\n", cause ? cause : "?");
    pthread_mutex_lock(&mu);
    lost = 1;
    wake();
    pthread_mutex_unlock(&mu);
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m)
{
    (void)ctx; (void)topic_len;
    if (A.mode[0] == 'l') {
        double now = now_s();
        pthread_mutex_lock(&mu);
        if (payload_seq(m->payload) == (uint32_t)rtt_n) {
            rtt[rtt_n] = now - t_sent;
            got_back = 1;
            wake();
        }
        pthread_mutex_unlock(&mu);
    } else if (tally_add(&tally, m->payload, (size_t)m->payloadlen)) {
        pthread_mutex_lock(&mu);
        done = 1;
        wake();
        pthread_mutex_unlock(&mu);
    }
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

/* wait (mutex held) until *flag, an error, or the timeout */
static int wait_for(int *flag, double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)seconds;
    while (!*flag && !lost && !failed)
        if (pthread_cond_timedwait(&cv, &mu, &ts) != 0)
            break;
    return *flag;
}

/* TCP_NODELAY on every TCP socket of the process (Paho has no option for it) */
static void force_nodelay(void)
{
    const char *e = getenv("BENCH_PAHO_NODELAY");
    int fd, n = 0;
    if (e != NULL && strcmp(e, "0") == 0)
        return;
    for (fd = 3; fd < 1024; fd++) {
        int type = 0, one = 1;
        struct sockaddr_storage ss;
        socklen_t len = sizeof type, slen = sizeof ss;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
            continue;
        if (getsockname(fd, (struct sockaddr *)&ss, &slen) != 0 ||
            (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
            continue;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0)
            n++;
    }
    if (n != 1)
        fprintf(stderr, "paho: TCP_NODELAY set on %d sockets\n", n);
}

/* create a client and start connecting; the connect callbacks report the outcome */
static MQTTAsync start_connect(const char *suffix, long n)
{
    char id[64], uri[128];
    MQTTAsync c;
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    MQTTAsync_connectOptions opts = MQTTAsync_connectOptions_initializer;
    MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
    int rc;

    snprintf(id, sizeof id, "bench-paho-%s-%ld-%ld", suffix, (long)getpid(), n);
    snprintf(uri, sizeof uri, "%s://%s:%d", A.tls_ca != NULL ? "ssl" : "tcp", A.host, A.port);
    co.MQTTVersion = MQTTVERSION_3_1_1;
    /* BENCH_PAHO_PERSIST=DIR: the publisher with Paho's default file
     * persistence in DIR (run.sh --store) */
    if (strcmp(suffix, "pub") == 0 && getenv("BENCH_PAHO_PERSIST") != NULL)
        rc = MQTTAsync_createWithOptions(&c, uri, id, MQTTCLIENT_PERSISTENCE_DEFAULT,
                                         getenv("BENCH_PAHO_PERSIST"), &co);
    else
        rc = MQTTAsync_createWithOptions(&c, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "paho: create: %d\n", rc);
        exit(1);
    }
    MQTTAsync_setCallbacks(c, NULL, on_lost, on_message, NULL);
    opts.keepAliveInterval = 60;
    opts.cleansession = 1;
    opts.MQTTVersion = MQTTVERSION_3_1_1;
    opts.maxInflight = A.window > 0 ? (int)A.window : 20;
    opts.onSuccess = on_connect;
    opts.onFailure = on_failure;
    opts.context = c;
    if (A.tls_ca != NULL) {
        ssl.trustStore = A.tls_ca;
        ssl.enableServerCertAuth = 1;
        ssl.verify = 1;
        opts.ssl = &ssl;
    }
    u_connect = usage_now();
    t_connect = now_s();
    if ((rc = MQTTAsync_connect(c, &opts)) != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "paho: connect: %d\n", rc);
        exit(1);
    }
    return c;
}

static MQTTAsync setup(const char *suffix)
{
    MQTTAsync c = start_connect(suffix, 0);
    pthread_mutex_lock(&mu);
    wait_for(&connected, 10);
    pthread_mutex_unlock(&mu);
    if (!connected)
        exit(1);
    force_nodelay();
    return c;
}

static void subscribe(MQTTAsync c, int qos)
{
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_subscribe;
    ro.onFailure = on_failure;
    if (MQTTAsync_subscribe(c, A.topic, qos, &ro) != MQTTASYNC_SUCCESS)
        exit(1);
    pthread_mutex_lock(&mu);
    wait_for(&subacked, 10);
    pthread_mutex_unlock(&mu);
    if (!subacked) {
        fprintf(stderr, "paho: no SUBACK\n");
        exit(1);
    }
}

static void finish(MQTTAsync c)
{
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    d.timeout = 1000;
    MQTTAsync_disconnect(c, &d);
    usleep(20000);
    MQTTAsync_destroy(&c);
}

static int run_pub(void)
{
    unsigned char *p = payload_buffer();
    MQTTAsync c = setup("pub");
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    long sent = 0;
    double t0, t1;
    struct usage u0;
    int rc, ok;

    ro.onSuccess = on_sent;
    ro.onFailure = on_failure;
    t0 = now_s();
    u0 = usage_now();
    pthread_mutex_lock(&mu);
    while (sent < A.count && !lost && !failed) {
        while (sent - acked >= A.window && !lost && !failed) {
            main_waiting = 1;
            pthread_cond_wait(&cv, &mu);
            main_waiting = 0;
        }
        pthread_mutex_unlock(&mu);
        make_payload(p, (uint32_t)sent);
        rc = MQTTAsync_send(c, A.topic, (int)payload_len, p, A.qos, 0, &ro);
        pthread_mutex_lock(&mu);
        if (rc != MQTTASYNC_SUCCESS) {
            fprintf(stderr, "paho: send: %d\n", rc);
            failed = 1;
            break;
        }
        sent++;
    }
    while (acked < A.count && !lost && !failed) {
        main_waiting = 1;
        pthread_cond_wait(&cv, &mu);
        main_waiting = 0;
    }
    ok = !lost && !failed && acked == A.count;
    pthread_mutex_unlock(&mu);
    t1 = now_s();
    pub_report(ok, sent, acked, t0, t1, u0);
    finish(c);
    free(p);
    return !ok;
}

static int run_sub(void)
{
    MQTTAsync c = setup("sub");
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
    pthread_mutex_lock(&mu);
    while (!done && !lost) {
        wait_for(&done, 1);
        if (tally.distinct != last) {
            last = tally.distinct;
            last_progress = now_s();
        } else if (now_s() - last_progress > SUB_STALL_S)
            break;
    }
    pthread_mutex_unlock(&mu);
    status = tally_report(&tally, u0);
    finish(c);
    return status;
}

static int run_lat(void)
{
    unsigned char *p = payload_buffer();
    MQTTAsync c = setup("lat");
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    long total = A.count + LAT_WARMUP, i;

    subscribe(c, A.qos);
    rtt = calloc((size_t)total, sizeof *rtt);
    for (i = 0; i < total && !lost; i++) {
        make_payload(p, (uint32_t)i);
        pthread_mutex_lock(&mu);
        got_back = 0;
        rtt_n = i;
        t_sent = now_s();
        pthread_mutex_unlock(&mu);
        if (MQTTAsync_send(c, A.topic, (int)payload_len, p, A.qos, 0, &ro) != MQTTASYNC_SUCCESS)
            break;
        pthread_mutex_lock(&mu);
        wait_for(&got_back, 5);
        pthread_mutex_unlock(&mu);
        if (!got_back)
            break;
    }
    finish(c);
    free(p);
    return latency_report(rtt + LAT_WARMUP, i > LAT_WARMUP ? i - LAT_WARMUP : 0, A.count);
}

static int run_idle(void)
{
    MQTTAsync c = setup("idle");
    subscribe(c, 0);
    usleep(1000000);
    printf("RESULT role=idle ok=1 vmhwm_kb=%ld\n", vmhwm_kb());
    finish(c);
    return 0;
}

/*
 * COUNT times: a new client, MQTTAsync_connect until its onSuccess callback
 * (the time measured), disconnect until its onSuccess callback, destroy.
 */
static int run_handshake(void)
{
    double *t = calloc((size_t)A.count, sizeof *t);
    struct usage start = usage_now(), u1;
    double cpu_connect = 0;
    long i;
    int rc;

    for (i = 0; i < A.count; i++) {
        MQTTAsync c;
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
        pthread_mutex_lock(&mu);
        connected = disconnected = 0;
        pthread_mutex_unlock(&mu);
        c = start_connect("hs", i);
        pthread_mutex_lock(&mu);
        wait_for(&connected, HANDSHAKE_TIMEOUT_S);
        t[i] = now_s() - t_connect;
        pthread_mutex_unlock(&mu);
        u1 = usage_now();
        cpu_connect += u1.cpu - u_connect.cpu;
        if (!connected) {
            fprintf(stderr, "paho: connect %ld failed\n", i);
            MQTTAsync_destroy(&c);
            break;
        }
        d.timeout = 1000;
        d.onSuccess = on_disconnected;
        d.onFailure = on_failure;
        if (MQTTAsync_disconnect(c, &d) == MQTTASYNC_SUCCESS) {
            pthread_mutex_lock(&mu);
            wait_for(&disconnected, 2);
            pthread_mutex_unlock(&mu);
        }
        MQTTAsync_destroy(&c);
    }
    rc = handshake_report(t, i, A.count, cpu_connect, usage_now().cpu - start.cpu);
    free(t);
    return rc;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv, &A);
    refuse_options(&A, "bench_paho", 1, 0, 1); /* no MQTT 5 here */
    if (strcmp(A.mode, "handshake") == 0)
        return run_handshake();
    if (strcmp(A.mode, "pub") == 0)
        return run_pub();
    if (strcmp(A.mode, "sub") == 0)
        return run_sub();
    if (strcmp(A.mode, "lat") == 0)
        return run_lat();
    return run_idle();
}
