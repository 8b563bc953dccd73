/* bench/store_sync.c - what one MQTT_SYNC_EVERY record costs on a disk, by the
 * way it is written and synced (issue 16: EVERY against Paho's file persistence).
 *
 *   cc -O2 -o /tmp/store_sync bench/store_sync.c && /tmp/store_sync [DIR] [ROUNDS] [BATCH]
 *
 * One "publish" is what the built-in log (src/store/log.rs) writes for a QoS 1
 * message in the benchmark's steady state: the 14-byte remove record of the
 * previous PUBACK (written, never synced on its own) and the 126-byte put record
 * of the new message, which must be on stable storage before publish returns.
 * Each strategy appends to its own file in DIR (default: the current directory;
 * use the disk the store will live on); the strategies take turns in batches of
 * BATCH publishes (default 100), in a shuffled order each round, ROUNDS rounds
 * (default 40), so that the disk's own ups and downs fall on all of them alike.
 * Printed: quartiles of the wall time per publish over the rounds, and the
 * median CPU time of the thread (most of it in the kernel). The files are
 * removed at the end. Strategies K and L are references, not durable stores.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef RWF_DSYNC
#define RWF_DSYNC 0x00000002
#endif

enum {
    CURRENT,      /* pwrite rm; pwrite put; fdatasync (src/store/log.rs) */
    RWF,          /* pwrite rm; pwritev2(put, RWF_DSYNC) */
    RWF_BOTH,     /* pwritev2([rm, put], RWF_DSYNC): rm held back to the next put */
    GROW_1M,      /* CURRENT, zero-filled ahead in 1 MiB steps */
    GROW_4K,      /* CURRENT, zero-filled ahead in 4 KiB steps */
    DSYNC_FD,     /* put through a second, O_DSYNC descriptor; rm through a plain one */
    DSYNC_ALL,    /* one O_DSYNC descriptor for both */
    FALLOC_ZERO,  /* CURRENT, each step fallocate()d, then zero-filled */
    NO_ROOM,      /* CURRENT with no room ahead: the size changes every record */
    FALLOC_KEEP,  /* CURRENT, room fallocate(KEEP_SIZE)d only (unwritten extents) */
    DIRECT,       /* O_DIRECT write of the tail sectors (rm + put); fdatasync */
    DIRECT_DSYNC, /* O_DIRECT | O_DSYNC write of the tail sectors */
    FLUSH_ONLY,   /* fdatasync with nothing dirty: the device's cache flush alone */
    NO_SYNC,      /* CURRENT without fdatasync (NONE: page cache only) */
    N_STRATEGIES
};

static const char *const NAMES[N_STRATEGIES] = {
    "A pwrite rm; pwrite put; fdatasync [log.rs]",
    "B pwrite rm; pwritev2(put, RWF_DSYNC)",
    "C pwritev2([rm, put], RWF_DSYNC)",
    "D A, zero-filled ahead in 1 MiB steps",
    "E A, zero-filled ahead in 4 KiB steps",
    "F put via an O_DSYNC fd, rm via a plain fd",
    "G one O_DSYNC fd for rm and put",
    "H A, steps fallocate()d, then zero-filled",
    "I A, no room ahead (size grows every record)",
    "J A, steps fallocate(KEEP_SIZE) only",
    "M O_DIRECT tail sectors (rm + put); fdatasync",
    "N O_DIRECT|O_DSYNC tail sectors (rm + put)",
    "K fdatasync, nothing dirty (flush alone)",
    "L A without fdatasync (page cache only)",
};

#define DIRECT_SPAN (1L << 20) /* O_DIRECT strategies cycle over 1 MiB of zeros */

struct log {
    int fd, fd2; /* fd2: the O_DSYNC or O_DIRECT descriptor */
    long end, room, step;
    int usable;
    char path[4096];
};

static char zeros[1 << 20];
static unsigned char *tail; /* O_DIRECT: an aligned image of the file's first MiB */

static double clock_s(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void zero_fill(int fd, long from, long to)
{
    while (from < to) {
        long n = to - from > (long)sizeof zeros ? (long)sizeof zeros : to - from;
        if (pwrite(fd, zeros, (size_t)n, from) != n) {
            perror("pwrite zeros");
            exit(1);
        }
        from += n;
    }
}

/* The room ahead of the records, as each strategy keeps it. */
static void grow(int s, struct log *l)
{
    long target;
    if (s == NO_ROOM || s == FLUSH_ONLY || s == DIRECT || s == DIRECT_DSYNC || l->end + 256 <= l->room)
        return;
    target = (l->end + 256 + l->step) / l->step * l->step;
    if (s == FALLOC_ZERO || s == FALLOC_KEEP)
        fallocate(l->fd, s == FALLOC_KEEP ? FALLOC_FL_KEEP_SIZE : 0, l->room, target - l->room);
    if (s != FALLOC_KEEP)
        zero_fill(l->fd, l->room, target);
    l->room = target;
}

static void must(long got, long want, const char *what)
{
    if (got != want) {
        perror(what);
        exit(1);
    }
}

static void publish(int s, struct log *l, const char *rm, size_t rm_len, const char *put, size_t put_len)
{
    struct iovec v[2] = {{(void *)rm, rm_len}, {(void *)put, put_len}};
    long len = (long)(rm_len + put_len);
    switch (s) {
    case FLUSH_ONLY:
        must(fdatasync(l->fd), 0, "fdatasync");
        return;
    case RWF:
        must(pwrite(l->fd, rm, rm_len, l->end), (long)rm_len, "pwrite");
        must(pwritev2(l->fd, &v[1], 1, l->end + (long)rm_len, RWF_DSYNC), (long)put_len, "pwritev2");
        break;
    case RWF_BOTH:
        must(pwritev2(l->fd, v, 2, l->end, RWF_DSYNC), len, "pwritev2");
        break;
    case DSYNC_FD:
        must(pwrite(l->fd, rm, rm_len, l->end), (long)rm_len, "pwrite");
        must(pwrite(l->fd2, put, put_len, l->end + (long)rm_len), (long)put_len, "pwrite");
        break;
    case DIRECT:
    case DIRECT_DSYNC: {
        long first, last;
        if (l->end + len > DIRECT_SPAN)
            l->end = 8; /* overwrite from the start again: the file stays 1 MiB */
        memcpy(tail + l->end, rm, rm_len);
        memcpy(tail + l->end + rm_len, put, put_len);
        first = l->end & ~511L;
        last = (l->end + len + 511) & ~511L;
        must(pwrite(l->fd2, tail + first, (size_t)(last - first), first), last - first, "pwrite O_DIRECT");
        if (s == DIRECT)
            must(fdatasync(l->fd2), 0, "fdatasync");
        break;
    }
    default:
        must(pwrite(l->fd, rm, rm_len, l->end), (long)rm_len, "pwrite");
        must(pwrite(l->fd, put, put_len, l->end + (long)rm_len), (long)put_len, "pwrite");
        if (s != NO_SYNC)
            must(fdatasync(l->fd), 0, "fdatasync");
    }
    l->end += len;
    grow(s, l);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    int rounds = argc > 2 ? atoi(argv[2]) : 40;
    int batch = argc > 3 ? atoi(argv[3]) : 100;
    struct log logs[N_STRATEGIES];
    int order[N_STRATEGIES];
    double *wall, *cpu;
    char rm[14], put[126];
    int s, r, i;

    if (rounds < 1 || batch < 1) {
        fprintf(stderr, "usage: store_sync [DIR] [ROUNDS] [BATCH]\n");
        return 2;
    }
    wall = calloc((size_t)N_STRATEGIES * (size_t)rounds, sizeof *wall);
    cpu = calloc((size_t)N_STRATEGIES * (size_t)rounds, sizeof *cpu);
    if (wall == NULL || cpu == NULL || posix_memalign((void **)&tail, 4096, DIRECT_SPAN) != 0)
        return 1;
    memset(tail, 0, DIRECT_SPAN);
    memcpy(tail, "MQTTLOG\1", 8);
    memset(rm, 'r', sizeof rm);
    memset(put, 'p', sizeof put);
    for (s = 0; s < N_STRATEGIES; s++) {
        struct log *l = &logs[s];
        snprintf(l->path, sizeof l->path, "%s/store_sync.%d.log", dir, s);
        l->fd = open(l->path, O_RDWR | O_CREAT | O_TRUNC | (s == DSYNC_ALL ? O_DSYNC : 0), 0644);
        if (l->fd < 0) {
            perror(l->path);
            return 1;
        }
        must(pwrite(l->fd, tail, 8, 0), 8, "pwrite");
        l->end = l->room = 8;
        l->step = s == GROW_1M ? 1L << 20 : s == GROW_4K ? 4096 : 65536;
        l->fd2 = -1;
        l->usable = 1;
        if (s == DIRECT || s == DIRECT_DSYNC || s == FLUSH_ONLY) {
            zero_fill(l->fd, 8, s == FLUSH_ONLY ? 4096 : DIRECT_SPAN);
            l->room = s == FLUSH_ONLY ? 4096 : DIRECT_SPAN;
        }
        if (s == DSYNC_FD)
            l->fd2 = open(l->path, O_RDWR | O_DSYNC);
        if (s == DIRECT || s == DIRECT_DSYNC) {
            l->fd2 = open(l->path, O_RDWR | O_DIRECT | (s == DIRECT_DSYNC ? O_DSYNC : 0));
            if (l->fd2 < 0) {
                fprintf(stderr, "store_sync: %s: O_DIRECT not supported here, left out\n", NAMES[s]);
                l->usable = 0;
            }
        }
        grow(s, l);
        must(fsync(l->fd), 0, "fsync");
    }
    for (s = 0; s < N_STRATEGIES; s++)
        order[s] = s;
    srand(1);
    for (r = 0; r < rounds; r++) {
        for (i = N_STRATEGIES - 1; i > 0; i--) {
            int j = rand() % (i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (i = 0; i < N_STRATEGIES; i++) {
            struct log *l = &logs[order[i]];
            double t0, c0;
            int k;
            if (!l->usable)
                continue;
            t0 = clock_s(CLOCK_MONOTONIC);
            c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
            for (k = 0; k < batch; k++)
                publish(order[i], l, rm, sizeof rm, put, sizeof put);
            wall[order[i] * rounds + r] = (clock_s(CLOCK_MONOTONIC) - t0) / batch * 1e6;
            cpu[order[i] * rounds + r] = (clock_s(CLOCK_THREAD_CPUTIME_ID) - c0) / batch * 1e6;
        }
    }
    printf("%d rounds x %d publishes in %s; per publish (remove 14 B + put 126 B):\n", rounds, batch, dir);
    printf("%-47s %8s %8s %8s %8s\n", "strategy", "p25 us", "med us", "p75 us", "cpu us");
    for (s = 0; s < N_STRATEGIES; s++) {
        double *w = wall + s * rounds, *c = cpu + s * rounds;
        if (logs[s].usable) {
            qsort(w, (size_t)rounds, sizeof *w, cmp);
            qsort(c, (size_t)rounds, sizeof *c, cmp);
            printf("%-47s %8.1f %8.1f %8.1f %8.2f\n", NAMES[s], w[rounds / 4], w[rounds / 2],
                   w[3 * rounds / 4], c[rounds / 2]);
        }
        close(logs[s].fd);
        if (logs[s].fd2 >= 0)
            close(logs[s].fd2);
        unlink(logs[s].path);
    }
    return 0;
}
