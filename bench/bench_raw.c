/*
 * bench_raw.c - the physical reference: no MQTT library, the cheapest correct MQTT
 * 3.1.1 client this benchmark can think of.
 *
 *   bench_raw pub HOST PORT TOPIC 0 COUNT BATCH    pre-encoded QoS 0 PUBLISH packets,
 *                                                  BATCH per write() (only the sequence
 *                                                  number, at both ends, is patched in place)
 *   bench_raw pub HOST PORT TOPIC 1|2 COUNT WINDOW at most WINDOW PUBLISHes not yet
 *                                                  completed (PUBACK; PUBCOMP), packet ids
 *                                                  1..65535 in turn, skipping any still in
 *                                                  flight; block in read() (64 KiB), handle
 *                                                  every acknowledgement in it, then one
 *                                                  write() with the PUBRELs (QoS 2) and the
 *                                                  PUBLISHes that refill the window
 *   bench_raw sub HOST PORT TOPIC QOS COUNT        CONNECT + SUBSCRIBE at QOS, then read()
 *                                                  64 KiB at a time, count the PUBLISHes
 *                                                  (QoS 2: on PUBLISH) and answer all the
 *                                                  packets of one read() (PUBACK; PUBREC,
 *                                                  and PUBCOMP for PUBREL) in one write()
 *
 * One thread, blocking sockets, no poll/epoll, TCP_NODELAY on: one read() and at most
 * one write() per wake-up. The floor any client can reach with this broker's pacing.
 * Anything unexpected (a packet type or QoS it did not ask for, an acknowledgement
 * for a packet id not in flight, a malformed packet) ends it with exit status 1.
 */
#include "bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/time.h>

static struct args A;

static void die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "raw %s: ", A.mode);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

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

/* blocking read()s time out after S seconds (EAGAIN) */
static void set_read_timeout(int fd, int s)
{
    struct timeval tv = {s, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/*
 * Length of the whole packet at p[0..n), fixed header included; 0 while it is not
 * complete. *HL: length of the fixed header, *RL: remaining length.
 */
static size_t packet_len(const unsigned char *p, size_t n, size_t *hl, size_t *rl)
{
    size_t len = 0, mul = 1, i = 1;
    for (;;) {
        if (i > 4)
            die("malformed remaining length");
        if (i >= n)
            return 0;
        len += (size_t)(p[i] & 0x7f) * mul;
        mul *= 128;
        if (!(p[i++] & 0x80))
            break;
    }
    if (n - i < len)
        return 0;
    *hl = i;
    *rl = len;
    return i + len;
}

static size_t put_ack(unsigned char *o, unsigned char type, unsigned id)
{
    o[0] = type;
    o[1] = 2;
    o[2] = (unsigned char)(id >> 8);
    o[3] = (unsigned char)id;
    return 4;
}

#define RAW_BATCH_MAX 4096
#define RAW_READ (64 * 1024)

/* QoS 0: BATCH pre-encoded PUBLISHes per write(), nothing to wait for */
static int run_pub0(int fd)
{
    size_t tlen = strlen(A.topic), rl = 2 + tlen + PAYLOAD_LEN, hl, plen;
    unsigned char head[8], *batch, *payload0;
    long batch_n = A.window > RAW_BATCH_MAX ? RAW_BATCH_MAX : A.window, sent = 0, i;
    double t0, t1;
    struct usage u0;

    head[0] = 0x30;
    hl = 1 + put_varint(head + 1, rl);
    plen = hl + rl;
    batch = malloc(plen * (size_t)batch_n);
    if (batch == NULL)
        die("out of memory");
    for (i = 0; i < batch_n; i++) {
        unsigned char *p = batch + (size_t)i * plen;
        memcpy(p, head, hl);
        put_str(p + hl, A.topic);
        make_payload(p + hl + 2 + tlen, 0);
    }
    payload0 = batch + hl + 2 + tlen;
    t0 = now_s();
    u0 = usage_now();
    while (sent < A.count) {
        long k = A.count - sent < batch_n ? A.count - sent : batch_n;
        for (i = 0; i < k; i++) {
            uint32_t seq = (uint32_t)(sent + i);
            memcpy(payload0 + (size_t)i * plen, &seq, sizeof seq);
            memcpy(payload0 + (size_t)i * plen + PAYLOAD_LEN - sizeof seq, &seq, sizeof seq);
        }
        write_all(fd, batch, plen * (size_t)k);
        sent += k;
    }
    t1 = now_s();
    pub_report(1, sent, sent, t0, t1, u0);
    free(batch);
    return 0;
}

/*
 * QoS 1/2: at most WINDOW messages not completed. state[id]: 0 free, 1 PUBLISH sent
 * (waiting for PUBACK / PUBREC), 2 PUBREL sent (waiting for PUBCOMP).
 */
static unsigned char state[65536];
static unsigned char *tmpl; /* the PUBLISH, pre-encoded */
static size_t plen, id_off, pay_off;
static unsigned last_id;
static long sent;

/* append N PUBLISHes to out[o..]: the next sequence numbers, the next free ids */
static size_t refill(unsigned char *out, size_t o, long n)
{
    for (; n > 0; n--) {
        uint32_t seq = (uint32_t)sent++;
        do
            last_id = last_id % 65535 + 1;
        while (state[last_id]);
        state[last_id] = 1;
        memcpy(out + o, tmpl, plen);
        out[o + id_off] = (unsigned char)(last_id >> 8);
        out[o + id_off + 1] = (unsigned char)last_id;
        memcpy(out + o + pay_off, &seq, sizeof seq);
        memcpy(out + o + pay_off + PAYLOAD_LEN - sizeof seq, &seq, sizeof seq);
        o += plen;
    }
    return o;
}

static int run_pub12(int fd)
{
    static unsigned char buf[RAW_READ + 16];
    size_t tlen = strlen(A.topic), rl = 2 + tlen + 2 + PAYLOAD_LEN, hl, have = 0, o;
    unsigned char *out;
    long completed = 0, k;
    double t0, t1;
    struct usage u0;

    if (A.window > 65535)
        die("WINDOW must be at most 65535 at QoS %d (packet ids)", A.qos);
    tmpl = malloc(8 + rl);
    if (tmpl == NULL)
        die("out of memory");
    tmpl[0] = (unsigned char)(0x30 | A.qos << 1);
    hl = 1 + put_varint(tmpl + 1, rl);
    plen = hl + rl;
    put_str(tmpl + hl, A.topic);
    id_off = hl + 2 + tlen;
    pay_off = id_off + 2;
    make_payload(tmpl + pay_off, 0);
    /* one read's output: at most WINDOW PUBRELs and WINDOW PUBLISHes */
    out = malloc((size_t)A.window * (plen + 4));
    if (out == NULL)
        die("out of memory");
    set_read_timeout(fd, 10);

    t0 = now_s();
    u0 = usage_now();
    o = refill(out, 0, A.count < A.window ? A.count : A.window);
    write_all(fd, out, o);
    while (completed < A.count) {
        size_t off = 0, len, phl, prl;
        ssize_t r = read(fd, buf + have, RAW_READ);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                die("no acknowledgement for 10 s (%ld of %ld completed)", completed, A.count);
            die("read: %s", strerror(errno));
        }
        if (r == 0)
            die("connection closed by the broker (%ld of %ld completed)", completed, A.count);
        have += (size_t)r;
        o = 0;
        while ((len = packet_len(buf + off, have - off, &phl, &prl)) != 0) {
            const unsigned char *p = buf + off;
            unsigned pid;
            if (prl != 2 || (p[0] != 0x40 && p[0] != 0x50 && p[0] != 0x70))
                die("unexpected packet 0x%02x (remaining length %zu)", p[0], prl);
            pid = (unsigned)p[2] << 8 | p[3];
            if (p[0] == 0x40 && A.qos == 1 && state[pid] == 1) { /* PUBACK */
                state[pid] = 0;
                completed++;
            } else if (p[0] == 0x50 && A.qos == 2 && state[pid] == 1) { /* PUBREC */
                state[pid] = 2;
                o += put_ack(out + o, 0x62, pid); /* PUBREL */
            } else if (p[0] == 0x70 && A.qos == 2 && state[pid] == 2) { /* PUBCOMP */
                state[pid] = 0;
                completed++;
            } else
                die("%s for packet id %u, which is not waiting for it (QoS %d)",
                    p[0] == 0x40 ? "PUBACK" : p[0] == 0x50 ? "PUBREC" : "PUBCOMP", pid, A.qos);
            off += len;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
        /* refill the window: completed + WINDOW - sent slots are free */
        k = completed + A.window - sent;
        o = refill(out, o, k < A.count - sent ? k : A.count - sent);
        if (o > 0)
            write_all(fd, out, o);
    }
    t1 = now_s();
    if (have != 0)
        die("%zu bytes after the last acknowledgement", have);
    pub_report(1, sent, completed, t0, t1, u0);
    free(out);
    free(tmpl);
    return 0;
}

static int run_pub(void)
{
    int fd = mqtt_open("pub"), rc;
    unsigned char disconnect[2] = {0xe0, 0};

    rc = A.qos == 0 ? run_pub0(fd) : run_pub12(fd);
    write_all(fd, disconnect, 2);
    close(fd);
    return rc;
}

static int run_sub(void)
{
    int fd = mqtt_open("sub");
    /* a read() of at most RAW_READ lands after a partial packet; the replies to
     * the packets of one read() are never longer than those packets (4 bytes for
     * a PUBLISH or PUBREL of at least 4) */
    static unsigned char buf[2 * RAW_READ], out[2 * RAW_READ];
    static unsigned char rec[65536]; /* QoS 2: 1 = PUBREC sent, waiting for PUBREL */
    unsigned char sub[256], body[220];
    size_t n = 0, bl = 0, have = 0;
    struct tally t;
    struct usage u0;
    double last_progress;
    int done = 0;

    /* SUBSCRIBE id 1 at QoS A.qos */
    body[bl++] = 0;
    body[bl++] = 1;
    bl += put_str(body + bl, A.topic);
    body[bl++] = (unsigned char)A.qos;
    sub[n++] = 0x82;
    n += put_varint(sub + n, bl);
    memcpy(sub + n, body, bl);
    write_all(fd, sub, n + bl);
    read_all(fd, sub, 5);
    if (sub[0] != 0x90 || sub[1] != 3 || sub[2] != 0 || sub[3] != 1 || sub[4] != A.qos)
        die("bad SUBACK %02x %02x %02x %02x %02x (asked QoS %d)", sub[0], sub[1], sub[2],
            sub[3], sub[4], A.qos);
    set_read_timeout(fd, 1);
    tally_init(&t, A.count);
    u0 = usage_now();
    printf("ready\n");
    fflush(stdout);
    last_progress = now_s();
    while (!done) {
        size_t off = 0, o = 0, len, hl, rl, room = sizeof buf - have;
        ssize_t r;
        if (room == 0)
            die("packet longer than %zu bytes", sizeof buf);
        r = read(fd, buf + have, room < RAW_READ ? room : RAW_READ);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                die("read: %s", strerror(errno));
            if (now_s() - last_progress > SUB_STALL_S)
                break;
            continue;
        }
        if (r == 0) {
            fprintf(stderr, "raw sub: connection closed by the broker\n");
            break;
        }
        have += (size_t)r;
        last_progress = now_s();
        while ((len = packet_len(buf + off, have - off, &hl, &rl)) != 0) {
            const unsigned char *p = buf + off, *v = p + hl;
            int q = (p[0] >> 1) & 3;
            if ((p[0] >> 4) == 3) { /* PUBLISH */
                size_t tl, pos;
                unsigned pid = 0;
                if (q > A.qos)
                    die("PUBLISH at QoS %d on a QoS %d subscription", q, A.qos);
                if (rl < 2)
                    die("malformed PUBLISH");
                tl = (size_t)v[0] << 8 | v[1];
                pos = 2 + tl + (q ? 2 : 0);
                if (pos > rl)
                    die("malformed PUBLISH");
                if (q) {
                    pid = (unsigned)v[2 + tl] << 8 | v[3 + tl];
                    if (pid == 0)
                        die("PUBLISH at QoS %d with packet id 0", q);
                }
                if (tally_add(&t, v + pos, rl - pos))
                    done = 1;
                if (q == 1)
                    o += put_ack(out + o, 0x40, pid); /* PUBACK */
                else if (q == 2) {
                    rec[pid] = 1;
                    o += put_ack(out + o, 0x50, pid); /* PUBREC */
                }
            } else if (p[0] == 0x62 && rl == 2) { /* PUBREL */
                unsigned pid = (unsigned)v[0] << 8 | v[1];
                if (A.qos != 2 || !rec[pid])
                    die("PUBREL for packet id %u, which is not waiting for it", pid);
                rec[pid] = 0;
                o += put_ack(out + o, 0x70, pid); /* PUBCOMP */
            } else
                die("unexpected packet 0x%02x (remaining length %zu)", p[0], rl);
            off += len;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
        if (o > 0)
            write_all(fd, out, o);
    }
    close(fd);
    return tally_report(&t, u0);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv, &A);
    refuse_options(&A, "bench_raw", 0, 0, 0); /* plain TCP, 3.1.1, 64-byte payloads only */
    if (strcmp(A.mode, "pub") == 0)
        return run_pub();
    if (strcmp(A.mode, "sub") == 0)
        return run_sub();
    fprintf(stderr, "raw: pub and sub only\n");
    return 2;
}
