/*
 * bench_raw.c - the physical reference: no MQTT library.
 *
 *   bench_raw pub HOST PORT TOPIC 0 COUNT BATCH   pre-encoded QoS 0 PUBLISH packets,
 *                                                 BATCH per write() (only the 4-byte
 *                                                 sequence number is patched in place)
 *   bench_raw sub HOST PORT TOPIC 0 COUNT         CONNECT + SUBSCRIBE, then read() 64 KiB
 *                                                 at a time and count the PUBLISHes
 *
 * The ceiling the broker allows for QoS 0 on this machine. TCP_NODELAY is on.
 */
#include "bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static struct args A;

static size_t put_varint(unsigned char *p, size_t v)
{
    size_t n = 0;
    do {
        unsigned char b = v % 128;
        v /= 128;
        p[n++] = b | (v ? 0x80 : 0);
    } while (v);
    return n;
}

static size_t put_str(unsigned char *p, const char *s)
{
    size_t len = strlen(s);
    p[0] = (unsigned char)(len >> 8);
    p[1] = (unsigned char)len;
    memcpy(p + 2, s, len);
    return len + 2;
}

static void write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            perror("raw: write");
            exit(1);
        }
        p += w;
        n -= (size_t)w;
    }
}

static void read_all(int fd, unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) {
            fprintf(stderr, "raw: connection closed\n");
            exit(1);
        }
        p += r;
        n -= (size_t)r;
    }
}

/* TCP connect, CONNECT, wait for a CONNACK accepting it */
static int mqtt_open(const char *suffix)
{
    struct sockaddr_in sa;
    unsigned char buf[256], body[200];
    char id[64];
    size_t bl = 0, n = 0;
    int fd, one = 1;

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)A.port);
    if (inet_pton(AF_INET, A.host, &sa.sin_addr) != 1) {
        fprintf(stderr, "raw: HOST must be an IPv4 literal\n");
        exit(2);
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("raw: connect");
        exit(1);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    snprintf(id, sizeof id, "bench-raw-%s-%ld", suffix, (long)getpid());
    bl += put_str(body, "MQTT");
    body[bl++] = 4;    /* 3.1.1 */
    body[bl++] = 0x02; /* clean session */
    body[bl++] = 0;
    body[bl++] = 60; /* keepalive */
    bl += put_str(body + bl, id);
    buf[n++] = 0x10;
    n += put_varint(buf + n, bl);
    memcpy(buf + n, body, bl);
    write_all(fd, buf, n + bl);
    read_all(fd, buf, 4);
    if (buf[0] != 0x20 || buf[3] != 0) {
        fprintf(stderr, "raw: CONNACK refused\n");
        exit(1);
    }
    return fd;
}

#define RAW_BATCH_MAX 4096

static int run_pub(void)
{
    int fd = mqtt_open("pub");
    size_t tlen = strlen(A.topic), rl = 2 + tlen + PAYLOAD_LEN, hl, plen;
    unsigned char head[8], *batch, *payload0;
    long batch_n = A.window > RAW_BATCH_MAX ? RAW_BATCH_MAX : A.window, sent = 0, i;
    double t0, c0, t1, c1;

    head[0] = 0x30;
    hl = 1 + put_varint(head + 1, rl);
    plen = hl + rl;
    batch = malloc(plen * (size_t)batch_n);
    for (i = 0; i < batch_n; i++) {
        unsigned char *p = batch + (size_t)i * plen;
        memcpy(p, head, hl);
        put_str(p + hl, A.topic);
        make_payload(p + hl + 2 + tlen, 0);
    }
    payload0 = batch + hl + 2 + tlen;
    t0 = now_s();
    c0 = cpu_s();
    while (sent < A.count) {
        long k = A.count - sent < batch_n ? A.count - sent : batch_n;
        for (i = 0; i < k; i++) {
            uint32_t seq = (uint32_t)(sent + i);
            memcpy(payload0 + (size_t)i * plen, &seq, sizeof seq);
        }
        write_all(fd, batch, plen * (size_t)k);
        sent += k;
    }
    t1 = now_s();
    c1 = cpu_s();
    printf("RESULT role=pub ok=1 sent=%ld acked=%ld t_start=%.6f t_end=%.6f cpu=%.6f\n", sent,
           sent, t0, t1, c1 - c0);
    fflush(stdout);
    head[0] = 0xe0;
    head[1] = 0;
    write_all(fd, head, 2);
    close(fd);
    return 0;
}

static int run_sub(void)
{
    int fd = mqtt_open("sub");
    static unsigned char buf[1 << 17];
    unsigned char sub[256];
    size_t n = 0, bl = 0, have = 0;
    struct tally t;
    double c0, last_progress;
    int done = 0;

    /* SUBSCRIBE id 1, QoS 0 */
    unsigned char body[220];
    body[bl++] = 0;
    body[bl++] = 1;
    bl += put_str(body + bl, A.topic);
    body[bl++] = 0;
    sub[n++] = 0x82;
    n += put_varint(sub + n, bl);
    memcpy(sub + n, body, bl);
    write_all(fd, sub, n + bl);
    read_all(fd, sub, 5);
    if (sub[0] != 0x90 || sub[4] != 0) {
        fprintf(stderr, "raw: bad SUBACK\n");
        return 1;
    }
    tally_init(&t, A.count);
    c0 = cpu_s();
    printf("ready\n");
    fflush(stdout);
    last_progress = now_s();
    while (!done) {
        struct pollfd pfd = {fd, POLLIN, 0};
        size_t off = 0;
        ssize_t r;
        if (poll(&pfd, 1, 1000) == 0) {
            if (now_s() - last_progress > SUB_STALL_S)
                break;
            continue;
        }
        r = read(fd, buf + have, sizeof buf / 2);
        if (r <= 0)
            break;
        have += (size_t)r;
        last_progress = now_s();
        /* whole packets in buf[off..have) */
        for (;;) {
            size_t rl = 0, mul = 1, i = 1, tl;
            while (off + i < have && i <= 4) {
                rl += (size_t)(buf[off + i] & 0x7f) * mul;
                mul *= 128;
                if (!(buf[off + i++] & 0x80))
                    goto got_len;
            }
            break;
        got_len:
            if (off + i + rl > have)
                break;
            if ((buf[off] >> 4) == 3 && rl >= 2) {
                tl = ((size_t)buf[off + i] << 8) | buf[off + i + 1];
                if (tally_add(&t, buf + off + i + 2 + tl, rl - 2 - tl))
                    done = 1;
            }
            off += i + rl;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
    }
    close(fd);
    return tally_report(&t, cpu_s() - c0);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv, &A);
    if (A.qos != 0 && A.mode[0] != 'i') {
        fprintf(stderr, "raw: QoS 0 only\n");
        return 2;
    }
    if (strcmp(A.mode, "pub") == 0)
        return run_pub();
    if (strcmp(A.mode, "sub") == 0)
        return run_sub();
    fprintf(stderr, "raw: pub and sub only\n");
    return 2;
}
